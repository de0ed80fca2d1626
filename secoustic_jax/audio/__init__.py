"""secoustic_jax.audio"""
