"""secoustic_jax.checkpoint"""
