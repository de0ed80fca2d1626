"""secoustic_jax.training"""
