"""secoustic_jax.quantizer"""
