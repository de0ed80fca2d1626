"""`python -m secoustic_jax.kernels [--force]`: builds the CPU kernels (make install runs it)."""

import sys

from secoustic_jax.kernels import build

if __name__ == "__main__":
    print(build(force="--force" in sys.argv[1:]))
