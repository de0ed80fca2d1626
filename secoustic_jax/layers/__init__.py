"""secoustic_jax.layers"""
