"""secoustic-jax: SecoustiCodec in JAX/Flax.

Importing the package touches no device, environment variable or file: `Codec` (and the
rest of the facade) is imported on first attribute access (PEP 562 module __getattr__).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {"Codec": "secoustic_jax.api", "Encoded": "secoustic_jax.api"}
__all__ = ["Codec", "Encoded", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'secoustic_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
