"""CPU custom calls (XLA FFI), built from source with the host C++ compiler on first use.

`bf16_matvec(x, w)`: x f32[..., K] @ float32(w bf16[K, N]) -> f32[..., N], float32
accumulation, for the small-batch streaming steps (see bf16_matvec.cc for why XLA:CPU's
own bf16 dot is not used). The only kernel so far.

The shared library goes to `$SECOUSTIC_KERNEL_DIR` (default `~/.cache/secoustic-jax/
kernels`), named by a hash of the source, the jaxlib version (the FFI headers come from
it) and the compiler flags, so a stale build is never loaded. `make install` builds it
(`python -m secoustic_jax.kernels`); a missing compiler is a clear error, not a fallback.
Nothing is built, loaded or registered at import time.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

SOURCE = pathlib.Path(__file__).with_name("bf16_matvec.cc")
TARGET = "secoustic_bf16_matvec"
SYMBOL = "SecousticBf16Matvec"
# -march=native: the library is built on the machine that runs it (AVX-512 where present,
# a scalar loop elsewhere); -ffp-contract=off keeps the written fma order exact.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=c++17", "-fPIC", "-shared", "-w")


def _cache_dir() -> pathlib.Path:
    env = os.environ.get("SECOUSTIC_KERNEL_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache/secoustic-jax/kernels"


def library_path() -> pathlib.Path:
    """Where the library for this source, jaxlib and flag set lives (built or not)."""
    import jaxlib

    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(jaxlib.__version__.encode())
    h.update(" ".join(FLAGS).encode())
    return _cache_dir() / f"libsecoustic_kernels-{h.hexdigest()[:16]}.so"


def build(force: bool = False) -> pathlib.Path:
    """Compiles the library if it is missing (or `force`); returns its path.

    Written to a temporary file and renamed, so a concurrent or interrupted build never
    leaves a half-written library under the final name.
    """
    import jax

    out = library_path()
    if out.exists() and not force:
        return out
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("secoustic_jax.kernels: no C++ compiler (g++/c++, or $CXX) to build "
                           f"{SOURCE.name}; install g++ (`make install` does) and retry")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"secoustic_jax.kernels: cannot run the C++ compiler {cxx!r} "
                               f"({e}); install g++ or set $CXX") from e
        if proc.returncode != 0:
            raise RuntimeError(f"secoustic_jax.kernels: building {SOURCE.name} failed "
                               f"({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def load() -> str:
    """Builds if needed, loads the library and registers its FFI target (once per process)."""
    import jax

    lib = ctypes.cdll.LoadLibrary(str(build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(getattr(lib, SYMBOL)),
                                platform="cpu")
    return TARGET


def bf16_matvec(x, w):
    """x f32[..., K] (any leading dims), w bf16[K, N] -> x @ float32(w), f32[..., N].

    Deterministic (bit-identical across calls and thread schedules). CPU only; no
    gradient (it is an inference kernel).
    """
    import jax
    import jax.numpy as jnp

    if w.ndim != 2 or w.dtype != jnp.bfloat16:
        raise ValueError(f"bf16_matvec: w must be bf16[K, N], got {w.dtype}{list(w.shape)}")
    if x.shape[-1:] != w.shape[:1]:
        raise ValueError(f"bf16_matvec: x {list(x.shape)} does not contract with w "
                         f"{list(w.shape)}")
    lead, (k, n) = x.shape[:-1], w.shape
    x2 = x.astype(jnp.float32).reshape(-1, k)
    y = jax.ffi.ffi_call(load(), jax.ShapeDtypeStruct((x2.shape[0], n), jnp.float32))(x2, w)
    return y.reshape(*lead, n)
