"""secoustic_jax.eval"""
