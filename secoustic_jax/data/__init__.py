"""secoustic_jax.data"""
