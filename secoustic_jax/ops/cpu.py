"""CPU variants of the ops: what XLA:CPU is slow at, done another way (bench/NOTES.md).

Each function has the signature and the values of its reference in `ops/reference.py`
(up to float summation order where stated); `ops/__init__.py` chooses between them
(`ops/backend.py`). Nothing here is ever staged for a TPU or GPU.

- `window_attention`: the fused `kernels.window_attention` custom call (rotation, scores,
  softmax and weighted sum per block of 16 queries, in cache): the 86 Hz stack at T = 861
  took 143 instead of 279 ms on 2 Zen 5 cores (§8). Its gradient is the reference's.
  Staged only where the library has its AVX-512 path (`has_window_kernel`): the scalar
  fallback is 4x slower than the reference on an AVX2-only CPU (§11).
- `attend_ring`: bf16 rings read by the `bf16_scores` / `bf16_mix` custom calls (XLA:CPU's
  own bf16 dot is ~10x slower than its float32 one at one query per step, §6).
- `ring_dtype` / `ring_write`: bf16 rings stored as uint16 bit patterns (XLA:CPU widens a
  bf16 scatter over the whole ring), and one-token writes done twice at the same slot
  (XLA:CPU turns a one-index scatter into a dynamic-update-slice wrapped in copies of the
  ring, §3).
- `conv1d_valid`: per-tap matmul gradients (XLA:CPU lowers the kernel gradient of a
  channels-last conv1d at ~1 GFLOP/s, §4) and an im2col forward for 1-4 outputs (§5).
- `conv1d_bf16`, `narrow_matvec`: VDPBF16PS convs for HiFT (§9) and bf16 / int8 weight
  mat-vecs for streaming (§5, §7).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from secoustic_jax import kernels
from secoustic_jax.ops import reference as ref

# Outputs per call up to which the conv forward is one matmul over gathered taps (im2col):
# streaming steps emit 1-4 frames, where XLA:CPU's conv ran at ~9 GB/s of weight bytes and
# the [B*n, k*C_in] @ [k*C_in, C_out] dot at memory bandwidth (bench/NOTES.md section 5).
IM2COL_MAX_OUT = 4


# ---- attention ---------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def window_attention(qkv, cos, sin, context: int, block: int | None):
    """The fused kernel for float32 rows (`ref.window_attention`'s contract)."""
    return kernels.window_attention(qkv, cos, sin, context, 1.0 / math.sqrt(qkv.shape[-1]))


def _window_fwd(qkv, cos, sin, context, block):
    if block is None:
        # Short inputs (training crops): the dense reference's own forward, whose saved
        # probabilities the backward reuses; the kernel would add a dense recompute.
        return jax.vjp(lambda *a: ref.window_attention(*a, context, block), qkv, cos, sin)
    # Banded: its blocks are checkpointed, so the backward recomputes them anyway.
    return window_attention(qkv, cos, sin, context, block), (qkv, cos, sin)


def _window_bwd(context, block, residuals, g):
    if block is None:
        return residuals(g)  # the vjp function of the dense forward
    _, vjp = jax.vjp(lambda *a: ref.window_attention(*a, context, block), *residuals)
    return vjp(g)


window_attention.defvjp(_window_fwd, _window_bwd)


def attend_ring(q, keys, values, mask, scale: float):
    """float32 queries over a BF16_BITS ring: logits and weighted values in the custom
    calls (float32 accumulation), mask and softmax in XLA. mask [B, H, c, C]."""
    b, h, c, dh = q.shape
    cap = keys.shape[2]
    logits = kernels.bf16_scores(q.reshape(b * h, c, dh), keys.reshape(b * h, cap, dh))
    logits = jnp.where(mask, logits.reshape(b, h, c, cap) * scale, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1).reshape(b * h, c, cap)
    return kernels.bf16_mix(probs, values.reshape(b * h, cap, dh)).reshape(b, h, c, dh)


# ---- KV ring -----------------------------------------------------------------------------

def ring_dtype(dtype):
    """bf16 rings are held as their uint16 bit patterns, so writes are integer scatters in
    place (XLA:CPU widens a bf16 scatter to float32 and back, the whole ring, twice per
    write: 250 ms of a 21.5 Hz step at batch 16; a bitcast around it is materialised as
    copies, 116 ms)."""
    return jnp.dtype(ref.BF16_BITS) if jnp.dtype(dtype) == jnp.bfloat16 else jnp.dtype(dtype)


def ring_write(keys, values, positions, slots, k, v, pos):
    """`ref.ring_write`; a one-token chunk is written twice at the same slot (same value
    both times, so the result is the same): XLA rewrites a one-index scatter as a
    dynamic-update-slice, which XLA:CPU then copies (the whole ring, twice, per layer: 2x
    the 86 Hz step), while a two-index scatter updates the donated ring in place."""
    if slots.shape[0] == 1:
        slots, pos = (jnp.concatenate([a, a], axis=-1) for a in (slots, pos))
        k, v = (jnp.concatenate([a, a], axis=2) for a in (k, v))
    return ref.ring_write(keys, values, positions, slots, k, v, pos)


# ---- convolution -------------------------------------------------------------------------

def _tap(x, j: int, n_out: int, stride: int, dilation: int):
    """Input rows that tap j reads for outputs 0..n_out-1: [B, n_out, C_in]."""
    start = j * dilation
    return lax.slice_in_dim(x, start, start + (n_out - 1) * stride + 1, stride, axis=1)


def _conv(x, w, stride: int, dilation: int):
    k, c_in, c_out = w.shape
    n_out = (x.shape[1] - (k - 1) * dilation - 1) // stride + 1
    if 0 < n_out <= IM2COL_MAX_OUT:
        taps = jnp.stack([_tap(x, j, n_out, stride, dilation) for j in range(k)], axis=2)
        y = taps.reshape(-1, k * c_in) @ w.reshape(k * c_in, c_out)
        return y.reshape(x.shape[0], n_out, c_out)
    return ref.conv1d_valid(x, w, stride, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv1d_valid(x, w, stride: int = 1, dilation: int = 1):
    """`ref.conv1d_valid` whose gradients are K matmuls on [B*T', C] rows, the shape
    XLA:CPU's dot kernels are fast at (same values up to float32 summation order):

        dW[j] = sum_{b,t} x[b, j*d + t*s]^T g[b, t]        ([C_in, B*T'] @ [B*T', C_out])
        dx[b, j*d + t*s] += g[b, t] @ W[j]^T               (placed at stride s, offset j*d)
    """
    return _conv(x, w, stride, dilation)


def _conv_fwd(x, w, stride, dilation):
    return _conv(x, w, stride, dilation), (x, w)


def _conv_bwd(stride, dilation, res, g):
    x, w = res
    b, length, c_in = x.shape
    k, _, c_out = w.shape
    n_out = g.shape[1]
    g2 = g.reshape(b * n_out, c_out)
    dw = jnp.stack([_tap(x, j, n_out, stride, dilation).reshape(b * n_out, c_in).T @ g2
                    for j in range(k)]).astype(w.dtype)
    span = (n_out - 1) * stride + 1
    dx = jnp.zeros_like(x)
    for j in range(k):
        rows = (g2 @ w[j].T).reshape(b, n_out, c_in)
        if stride > 1:  # rows go to every stride-th input frame
            rows = jnp.pad(rows[:, :, None], ((0, 0), (0, 0), (0, stride - 1), (0, 0)))
            rows = rows.reshape(b, n_out * stride, c_in)[:, :span]
        start = j * dilation
        dx = dx + jnp.pad(rows, ((0, 0), (start, length - start - span), (0, 0))).astype(x.dtype)
    return dx, dw


conv1d_valid.defvjp(_conv_fwd, _conv_bwd)


def conv1d_bf16(x, w, b, dilation: int, pad: int):
    """`ref.conv1d_bf16` on VDPBF16PS (Cout % 64 == 0, Cin even)."""
    out_len = x.shape[1] + 2 * pad - dilation * (w.shape[0] - 1)
    return kernels.conv_bf16(x, kernels.pack_bf16_pairs(w), b, dilation, pad, out_len)


def has_bf16_conv() -> bool:
    return kernels.has_bf16_conv()


def has_window_kernel() -> bool:
    """Whether the fused attention kernel beats XLA here: only its AVX-512 build does."""
    return kernels.has_vector_window_attention()


def narrow_matvec(x, kernel, scale=None):
    """`ref.narrow_matvec` with the weights widened in registers."""
    if scale is None:
        return kernels.bf16_matvec(x, kernel)
    return kernels.int8_matvec(x, kernel, scale)
