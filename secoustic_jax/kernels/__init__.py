"""CPU custom calls (XLA FFI), built from source with the host C++ compiler on first use.

For the streaming steps, which read every weight and every key/value ring once per token
(XLA:CPU's own bf16 dot is ~10x slower than its float32 dot there; see the .cc files):

- `bf16_matvec(x, w)`: x f32[..., K] @ float32(w bf16[K, N]) -> f32[..., N];
- `int8_matvec(x, q, scale)`: (x @ float32(q int8[K, N])) * scale f32[N] -> f32[..., N];
- `bf16_scores(q, k)`: q f32[G, c, D] . k bf16[G, C, D] -> f32[G, c, C] (attention logits);
- `bf16_mix(p, v)`: p f32[G, c, C] @ v bf16[G, C, D] -> f32[G, c, D] (weighted values).

For the HiFT vocoder's convolutions (opt-in bf16 operands, float32 accumulation):

- `conv_bf16(x, w_pairs, bias, dilation, pad, out_len)` with `pack_bf16_pairs(w)`: a 1-D
  convolution on VDPBF16PS (`has_bf16_conv()`: whether this CPU build has it).

For the offline transformers (XLA:CPU runs the small band dots of windowed attention at a
third of its large-dot rate):

- `window_attention(qkv, cos, sin, context, scale)`: fused causal windowed attention
  with RoPE, from the in_proj rows f32[B, T, 3, H, D] to f32[B, T, H, D] (rotation,
  scores, softmax and weighted sum per block of queries, in cache).

All accumulate in float32 and are deterministic. One shared library holds them; it goes
to `$SECOUSTIC_KERNEL_DIR` (default `~/.cache/secoustic-jax/kernels`), named by a hash of
the sources, the jaxlib version (the FFI headers come from it) and the compiler flags, so
a stale build is never loaded. `make install` builds it
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

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

HERE = pathlib.Path(__file__).parent
SOURCES = tuple(HERE / n for n in ("common.h", "matvec.cc", "ring_attention.cc",
                                   "window_attention.cc", "conv_bf16.cc"))
# FFI target name -> exported handler symbol.
TARGETS = {"secoustic_bf16_matvec": "SecousticBf16Matvec",
           "secoustic_int8_matvec": "SecousticInt8Matvec",
           "secoustic_bf16_scores": "SecousticBf16Scores",
           "secoustic_bf16_mix": "SecousticBf16Mix",
           "secoustic_window_attention": "SecousticWindowAttention",
           "secoustic_conv_bf16": "SecousticConvBf16"}
# -march=native: the library is built on the machine that runs it (AVX-512 where present,
# a scalar loop elsewhere); -ffp-contract=off keeps the written fma order exact.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=c++17", "-fPIC", "-shared", "-w")


def _cache_dir() -> pathlib.Path:
    env = os.environ.get("SECOUSTIC_KERNEL_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache/secoustic-jax/kernels"


def library_path() -> pathlib.Path:
    """Where the library for these sources, jaxlib and flag set lives (built or not)."""
    h = hashlib.sha256()
    for src in SOURCES:
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    h.update(jaxlib.__version__.encode())
    h.update(" ".join(FLAGS).encode())
    return _cache_dir() / f"libsecoustic_kernels-{h.hexdigest()[:16]}.so"


def build(force: bool = False) -> pathlib.Path:
    """Compiles the library if it is missing (or `force`); returns its path.

    Written to a temporary file and renamed, so a concurrent or interrupted build never
    leaves a half-written library under the final name.
    """
    out = library_path()
    if out.exists() and not force:
        return out
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("secoustic_jax.kernels: no C++ compiler (g++/c++, or $CXX) to build "
                           "secoustic_jax/kernels; install g++ (`make install` does) and retry")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}",
           *(str(s) for s in SOURCES if s.suffix == ".cc"), "-o", tmp]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"secoustic_jax.kernels: cannot run the C++ compiler {cxx!r} "
                               f"({e}); install g++ or set $CXX") from e
        if proc.returncode != 0:
            raise RuntimeError("secoustic_jax.kernels: building the kernels failed "
                               f"({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def _library() -> ctypes.CDLL:
    return ctypes.cdll.LoadLibrary(str(build()))


@functools.cache
def load() -> tuple[str, ...]:
    """Builds if needed, loads the library and registers its FFI targets (once per process)."""
    lib = _library()
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    return tuple(TARGETS)


def stage_cpu_branch() -> bool:
    """Whether callers should stage a kernel branch: only when JAX's default backend is
    the CPU. `lax.platform_dependent` traces every branch on every platform, and the
    kernel branch builds and loads this library at trace time, so on a TPU/GPU host the
    callers stage their XLA form alone (no C++ compiler needed there)."""
    return jax.default_backend() == "cpu"


def cpu_or_default(*operands, cpu, default):
    """`lax.platform_dependent(*operands, cpu=cpu, default=default)` where
    `stage_cpu_branch()`, else `default(*operands)` alone: how every caller of these
    kernels dispatches between the custom call and its XLA form."""
    if not stage_cpu_branch():
        return default(*operands)
    return jax.lax.platform_dependent(*operands, cpu=cpu, default=default)


def _call(target: str, shape, *args, **attrs):
    load()
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="sequential")(*args, **attrs)


def bf16_matvec(x, w):
    """x f32[..., K] (any leading dims), w bf16[K, N] -> x @ float32(w), f32[..., N].

    Deterministic (bit-identical across calls and thread schedules). CPU only; no
    gradient (it is an inference kernel).
    """
    if w.ndim != 2 or w.dtype != jnp.bfloat16:
        raise ValueError(f"bf16_matvec: w must be bf16[K, N], got {w.dtype}{list(w.shape)}")
    return _matvec("bf16_matvec", x, w)


def _matvec(name: str, x, w, *extra):
    """x [..., K] against a checked narrow w [K, N] (plus `extra` operands) -> [..., N]."""
    if x.shape[-1:] != w.shape[:1]:
        raise ValueError(f"{name}: x {list(x.shape)} does not contract with "
                         f"{list(w.shape)}")
    lead, (k, n) = x.shape[:-1], w.shape
    x2 = x.astype(jnp.float32).reshape(-1, k)
    return _call("secoustic_" + name, (x2.shape[0], n), x2, w, *extra).reshape(*lead, n)


def int8_matvec(x, q, scale):
    """x f32[..., K], q int8[K, N], scale f32[N] -> (x @ float32(q)) * scale, f32[..., N].

    The product accumulates like `bf16_matvec` (k order, one fma per term, bit-identical
    rows at any batch), then each column is multiplied by its scale (one rounding).
    """
    if q.ndim != 2 or q.dtype != jnp.int8:
        raise ValueError(f"int8_matvec: q must be int8[K, N], got {q.dtype}{list(q.shape)}")
    if scale.shape != q.shape[1:]:
        raise ValueError(f"int8_matvec: scale must be f32[{q.shape[1]}], got "
                         f"{list(scale.shape)}")
    return _matvec("int8_matvec", x, q, scale.astype(jnp.float32))


def _ring_bits(name: str, a, ring, contract_axis: int):
    """The ring as uint16 bf16 bit patterns (the FFI operand type), after shape checks.

    A bf16 array is bitcast here, which XLA:CPU materialises as a copy: streaming rings are
    stored as uint16 already (ops.reference.BF16_BITS).
    """
    if ring.ndim != 3 or ring.dtype not in (jnp.bfloat16, jnp.uint16):
        raise ValueError(f"{name}: the ring must be bf16[G, C, D] (or its uint16 bit "
                         f"patterns), got {ring.dtype}{list(ring.shape)}")
    if a.ndim != 3 or a.shape[0] != ring.shape[0] or a.shape[2] != ring.shape[contract_axis]:
        raise ValueError(f"{name}: {list(a.shape)} does not contract with the ring "
                         f"{list(ring.shape)}")
    return ring if ring.dtype == jnp.uint16 else jax.lax.bitcast_convert_type(ring, jnp.uint16)


def bf16_scores(q, k):
    """q f32[G, c, D], k bf16[G, C, D] (or uint16 bits) -> f32[G, c, C],
    s[g, i, t] = q[g, i] . float32(k[g, t]).

    Each dot: 16-lane float32 partial sums over D, then a fixed reduction; deterministic.
    """
    k = _ring_bits("bf16_scores", q, k, 2)
    g, c, _ = q.shape
    return _call("secoustic_bf16_scores", (g, c, k.shape[1]), q.astype(jnp.float32), k)


def bf16_mix(p, v):
    """p f32[G, c, C], v bf16[G, C, D] (or uint16 bits) -> f32[G, c, D],
    o[g, i] = sum_t p[g, i, t] float32(v[g, t]).

    Sequential float32 fma over t (the order of `bf16_matvec`); deterministic.
    """
    v = _ring_bits("bf16_mix", p, v, 1)
    g, c, _ = p.shape
    return _call("secoustic_bf16_mix", (g, c, v.shape[2]), p.astype(jnp.float32), v)


def window_attention(qkv, cos, sin, context: int, scale: float):
    """Fused causal windowed attention with RoPE (layers/attention.py `window_attention`).

    qkv f32[B, T, 3, H, D] (in_proj output: q | k | v), cos, sin f32[B or 1, T, D/2]
    (`layers.rope.rope_tables`) -> f32[B, T, H, D],
    o[b, t, h] = sum_s softmax_s(scale * q'[b, t, h] . k'[b, s, h]) v[b, s, h] over
    t - context < s <= t, q' and k' rotated. Float32 throughout (a < 2 ulp exp);
    deterministic. CPU only, no gradient of its own.
    """
    if qkv.ndim != 5 or qkv.shape[2] != 3 or qkv.shape[4] % 2:
        raise ValueError(f"window_attention: qkv must be [B, T, 3, H, D] with D even, got "
                         f"{list(qkv.shape)}")
    b, t, _, h, d = qkv.shape
    if cos.shape != sin.shape or cos.shape not in ((1, t, d // 2), (b, t, d // 2)):
        raise ValueError(f"window_attention: cos, sin must be [1 or {b}, {t}, {d // 2}], got "
                         f"{list(cos.shape)}, {list(sin.shape)}")
    if int(context) < 1:
        raise ValueError(f"window_attention: context must be >= 1, got {context}")
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    return _call("secoustic_window_attention", (b, t, h, d), f32(qkv), f32(cos), f32(sin),
                 context=np.int64(context), scale=np.float32(scale))


def has_vector_window_attention() -> bool:
    """Whether `window_attention` was built with its AVX-512 path. Without it the kernel
    is a scalar loop, 4x slower than XLA's attention at T = 861 on an AVX2-only EPYC
    (bench/NOTES.md), so the ops seam stages it only when this holds."""
    return bool(_library().secoustic_window_attention_vectorised())


def has_bf16_conv() -> bool:
    """Whether the library was built with AVX512_BF16 (the `conv_bf16` instruction set)."""
    return bool(_library().secoustic_has_bf16_conv())


def pack_bf16_pairs(w):
    """Conv kernel f32[K, Cin, Cout] (Cin even) -> bf16 channel pairs u32[K, Cin/2, Cout]:
    the low half holds channel 2i, the high half 2i + 1 (round to nearest even)."""
    k, cin, cout = w.shape
    if cin % 2:
        raise ValueError(f"pack_bf16_pairs: Cin must be even, got {list(w.shape)}")
    pairs = jnp.swapaxes(w.astype(jnp.bfloat16).reshape(k, cin // 2, 2, cout), 2, 3)
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(pairs, jnp.uint16),
                                        jnp.uint32)


def conv_bf16(x, w_pairs, bias, dilation: int, pad: int, out_len: int):
    """x f32[B, T, Cin], w_pairs u32[K, Cin/2, Cout] (`pack_bf16_pairs`, Cout % 64 == 0),
    bias f32[Cout] -> y f32[B, out_len, Cout],
    y[b, t] = bias + sum_k bf16(x[b, t - pad + k dilation]) @ w[k], x zero outside [0, T).

    bf16 products, float32 accumulation (one chain per output, in tap / channel order);
    deterministic; no gradient (an inference kernel). A build without AVX512_BF16
    (`has_bf16_conv()` is False) fails when the call runs, with that reason (callers check
    up front: `model.hift_bf16.check_conv_dtype`).
    """
    if x.ndim != 3 or w_pairs.ndim != 3 or w_pairs.dtype != jnp.uint32 or \
            x.shape[2] != 2 * w_pairs.shape[1]:
        raise ValueError(f"conv_bf16: x [B, T, Cin] and w_pairs u32[K, Cin/2, Cout] do not fit: "
                         f"{list(x.shape)}, {w_pairs.dtype}{list(w_pairs.shape)}")
    cout = w_pairs.shape[2]
    if cout % 64 or bias.shape != (cout,):
        raise ValueError(f"conv_bf16: Cout must be a multiple of 64 with bias [{cout}], got "
                         f"{cout}, {list(bias.shape)}")
    if dilation < 1 or pad < 0 or out_len < 1:
        raise ValueError(f"conv_bf16: need dilation >= 1, pad >= 0, out_len >= 1, got "
                         f"{dilation}, {pad}, {out_len}")
    return _call("secoustic_conv_bf16", (x.shape[0], out_len, cout), x.astype(jnp.float32),
                 w_pairs, bias.astype(jnp.float32), dilation=np.int64(dilation),
                 pad=np.int64(pad))
