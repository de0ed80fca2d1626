"""secoustic-jax: SecoustiCodec in JAX/Flax.

Importing the package touches no device, environment variable or file.
"""

__version__ = "0.1.0"
