"""secoustic_jax.model"""
