"""The plain-XLA reference of every op, with native autodiff: what accelerators run.

Layouts: attention q, k, v are [B, H, T, Dh] (heads before time, the layout of the KV
cache); the fused offline entry takes the in_proj rows qkv [B, T, 3, H, Dh]. Convolutions
are channels-last: x [B, L, C_in], kernels [K, C_in, C_out]. Logits, softmax and weighted
sums accumulate in float32 whatever the compute dtype.

Attention visibility (model.md §5): key s is visible to query t iff 0 <= t - s < context.
Every query sees itself, so no softmax row is ever fully masked; masked logits are -inf
before the softmax, so they contribute exactly zero.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

DEFAULT_BLOCKS_PER_STEP = 8  # query blocks vectorised per lax.map step (bounds live logits)
BF16_BITS = jnp.uint16  # a bfloat16 KV ring stored as its bit patterns (ops/cpu.py)
DIMENSION_NUMBERS = ("NWC", "WIO", "NWC")  # activations [B, L, C], kernels [k, in, out]


# ---- attention ---------------------------------------------------------------------------

def rotate(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """x [B, T, H, Dh] rotated by the `rope_tables` cos, sin [B or 1, T, Dh/2] -> x.dtype;
    the rotation is computed in float32: (xr cos - xi sin, xr sin + xi cos)."""
    b, t, h, dh = x.shape
    cos, sin = cos[:, :, None], sin[:, :, None]
    pairs = x.astype(jnp.float32).reshape(b, t, h, dh // 2, 2)
    xr, xi = pairs[..., 0], pairs[..., 1]
    out_r = xr * cos - xi * sin
    out_i = xr * sin + xi * cos
    return jnp.stack([out_r, out_i], axis=-1).reshape(b, t, h, dh).astype(x.dtype)


def window_mask(q_pos: jnp.ndarray, k_pos: jnp.ndarray, context: int) -> jnp.ndarray:
    """Boolean visibility [..., Tq, Tk] from absolute positions q_pos [..., Tq], k_pos [..., Tk].

    Negative key positions mark padding / empty cache slots and are never visible.
    """
    delta = q_pos[..., :, None] - k_pos[..., None, :]
    return (delta >= 0) & (delta < context) & (k_pos[..., None, :] >= 0)


def attend(q, k, v, mask, scale: float) -> jnp.ndarray:
    """Masked softmax attention.

    Args:
      q: [B, H, Tq, Dh]; k, v: [B, H, Tk, Dh]; mask: bool, broadcastable to [B, H, Tq, Tk].
    Returns:
      [B, H, Tq, Dh] in q.dtype. Logits and softmax in float32 (bf16-safe).
    """
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def dense_attention(q, k, v, context: int, scale: float | None = None) -> jnp.ndarray:
    """The O(T^2) oracle: full [T, T] logits with the window mask. q, k, v: [B, H, T, Dh]."""
    t = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    pos = jnp.arange(t)
    return attend(q, k, v, window_mask(pos, pos, context), scale)


def banded_attention(q, k, v, context: int, block: int, scale: float | None = None,
                     blocks_per_step: int = DEFAULT_BLOCKS_PER_STEP) -> jnp.ndarray:
    """Blocked banded attention, memory O(T * (context + block)) instead of O(T^2).

    Query block i (rows i*b .. i*b+b-1) sees only the key band
    [i*b - (context-1), i*b + b - 1] (width W = b + context - 1), with the exact window
    mask inside. Blocks are processed by `lax.map` in groups of `blocks_per_step` (each
    group vmapped), so at most blocks_per_step * B*H*b*W logits are live at a time; the
    block body is rematerialised in the backward pass, so gradients do not keep the band
    probabilities of all blocks either.

    Args:
      q, k, v: [B, H, T, Dh]; context >= 1; block >= 1.
    Returns:
      [B, H, T, Dh] equal to `dense_attention` up to float summation order.
    """
    if context < 1 or block < 1 or blocks_per_step < 1:
        raise ValueError(f"need context, block, blocks_per_step >= 1, got {context}, {block}, "
                         f"{blocks_per_step}")
    bsz, h, t, dh = q.shape
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    nb = -(-t // block)
    width = block + context - 1
    pad_q = nb * block - t
    qp = jnp.pad(q, ((0, 0), (0, 0), (0, pad_q), (0, 0)))
    # Keys get context-1 (masked) slots on the left so every band slice is in range.
    kv_pad = ((0, 0), (0, 0), (context - 1, pad_q), (0, 0))
    kp, vp = jnp.pad(k, kv_pad), jnp.pad(v, kv_pad)

    @jax.checkpoint
    def one_block(i):
        start = i * block
        qb = lax.dynamic_slice_in_dim(qp, start, block, axis=2)  # [B, H, b, Dh]
        kb = lax.dynamic_slice_in_dim(kp, start, width, axis=2)  # [B, H, W, Dh]
        vb = lax.dynamic_slice_in_dim(vp, start, width, axis=2)
        q_pos = start + jnp.arange(block)
        k_pos = start - (context - 1) + jnp.arange(width)  # < 0: left padding
        return attend(qb, kb, vb, window_mask(q_pos, k_pos, context), scale)

    out = lax.map(one_block, jnp.arange(nb), batch_size=min(blocks_per_step, nb))
    out = jnp.moveaxis(out, 0, 2).reshape(bsz, h, nb * block, dh)  # [nb,B,H,b,Dh] -> time
    return out[:, :, :t]


def window_attention(qkv, cos, sin, context: int, block: int | None) -> jnp.ndarray:
    """Offline causal windowed attention with RoPE from the in_proj rows.

    qkv [B, T, 3, H, Dh] (q | k | v, unrotated), cos, sin [B or 1, T, Dh/2] (`rope_tables`)
    -> [B, T, H, Dh]: RoPE, then `banded_attention` with query blocks of `block` (None:
    `dense_attention`)."""
    q, k, v = (qkv[:, :, i] for i in range(3))
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    a = dense_attention(q, k, v, context) if block is None else banded_attention(
        q, k, v, context, block)
    return jnp.swapaxes(a, 1, 2)


# ---- KV ring -----------------------------------------------------------------------------

def ring_dtype(dtype):
    """The storage dtype of a ring of `dtype` values: the dtype itself."""
    return jnp.dtype(dtype)


def ring_values(ring, dtype):
    """A ring read back as `dtype` values (a BF16_BITS ring is bitcast to bf16 first)."""
    if ring.dtype == BF16_BITS:
        ring = lax.bitcast_convert_type(ring, jnp.bfloat16)
    return ring.astype(dtype)


def _ring_set(ring, slots, x):
    if ring.dtype == BF16_BITS:
        x = lax.bitcast_convert_type(x.astype(jnp.bfloat16), BF16_BITS)
    return ring.at[:, :, slots].set(x.astype(ring.dtype))


def ring_write(keys, values, positions, slots, k, v, pos):
    """Writes a chunk into a ring (one scatter per array, slots shared by the batch).

    keys, values [B, H, C, Dh]; positions [B, C]; slots [c]; k, v [B, H, c, Dh]; pos [B, c]
    -> (keys, values, positions)."""
    return (_ring_set(keys, slots, k), _ring_set(values, slots, v),
            positions.at[:, slots].set(pos))


def attend_ring(q, keys, values, mask, scale: float) -> jnp.ndarray:
    """`attend` over a cache ring (keys, values [B, H, C, Dh] as stored), widened to q's dtype."""
    return attend(q, ring_values(keys, q.dtype), ring_values(values, q.dtype), mask, scale)


# ---- convolution and narrow products -----------------------------------------------------

def conv1d_valid(x, w, stride: int = 1, dilation: int = 1):
    """x [B, L, C_in], w [K, C_in, C_out] -> [B, (L - k_eff) // stride + 1, C_out]."""
    return lax.conv_general_dilated(x, w, window_strides=(stride,), padding="VALID",
                                    rhs_dilation=(dilation,), dimension_numbers=DIMENSION_NUMBERS)


def conv1d_bf16(x, w, b, dilation: int, pad: int):
    """x f32[B, T, Cin], w f32[K, Cin, Cout], b [Cout]: bf16 operands, float32 accumulation
    -> f32[B, T + 2 pad - dilation (K - 1), Cout]."""
    y = lax.conv_general_dilated(
        x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1,), [(pad, pad)],
        rhs_dilation=(dilation,), dimension_numbers=DIMENSION_NUMBERS,
        preferred_element_type=jnp.float32)
    return y + b


def narrow_matvec(x, kernel, scale=None):
    """x f32[..., K] @ a narrow (bf16 or int8) kernel [K, N] widened in XLA, times the
    per-column scale [N] when given -> f32[..., N]."""
    y = jnp.dot(x, kernel.astype(jnp.float32), precision=lax.Precision.HIGHEST)
    return y if scale is None else y * scale
