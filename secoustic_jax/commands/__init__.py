"""Sub-commands of the `secoustic` console script (see secoustic_jax/cli.py)."""
