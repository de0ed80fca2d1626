"""Causal windowed multi-head attention: dense oracle, blocked banded form, ring KV cache.

Visibility rule (model.md §5): key s is visible to query t iff 0 <= t - s < context.
Every query sees itself, so no softmax row is ever fully masked. Masked logits are
replaced by -inf before the softmax, so they contribute exactly zero.

Layouts: q, k, v are [B, H, T, Dh] (heads before time, the layout of the KV cache).
Logits, softmax and the weighted sum accumulate in float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from secoustic_jax.config.model import TransformerConfig
from secoustic_jax.layers.common import EMBED, HEADS, QKV, dtype_of, torch_uniform
from secoustic_jax.layers.rope import apply_rope, rope_tables, rotate

DEFAULT_BLOCKS_PER_STEP = 8  # query blocks vectorised per lax.map step (bounds live logits)
BF16_BITS = jnp.uint16  # storage dtype of a bfloat16 KV ring (its bit patterns)


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


def attend_ring(q, keys, values, mask, scale: float) -> jnp.ndarray:
    """`attend` over a cache ring: keys, values [B, H, C, Dh] as stored in the ring.

    A bf16 ring (BF16_BITS) under float32 queries is read in bf16 on CPU by the
    `secoustic_jax.kernels` custom calls (logits and weighted values accumulate in float32;
    mask and softmax stay here): XLA:CPU's own bf16 dot is ~10x slower than its float32
    one at one query per step, and widening the ring first would move more bytes than a
    float32 ring. Other platforms widen the ring and use `attend`.
    """
    if keys.dtype != BF16_BITS:
        return attend(q, keys.astype(q.dtype), values.astype(q.dtype), mask, scale)

    def widened(q, keys, values, mask):
        k, v = (lax.bitcast_convert_type(a, jnp.bfloat16).astype(q.dtype) for a in (keys, values))
        return attend(q, k, v, mask, scale)

    def on_cpu(q, keys, values, mask):
        from secoustic_jax.kernels import bf16_mix, bf16_scores  # leaf module: jax only

        b, h, c, dh = q.shape
        cap = keys.shape[2]
        logits = bf16_scores(q.reshape(b * h, c, dh), keys.reshape(b * h, cap, dh))
        logits = jnp.where(mask, logits.reshape(b, h, c, cap) * scale, -jnp.inf)
        probs = jax.nn.softmax(logits, axis=-1).reshape(b * h, c, cap)
        return bf16_mix(probs, values.reshape(b * h, cap, dh)).reshape(b, h, c, dh)

    from secoustic_jax.kernels import cpu_or_default  # leaf module: jax only

    if q.dtype != jnp.float32:
        return widened(q, keys, values, mask)
    mask = jnp.broadcast_to(mask, q.shape[:3] + keys.shape[2:3])
    return cpu_or_default(q, keys, values, mask, cpu=on_cpu, default=widened)


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


def _window_reference(qkv, cos, sin, context: int, block: int | None) -> jnp.ndarray:
    """`window_attention` in XLA: RoPE, then `banded_attention` with query blocks of
    `block` (None: `dense_attention`), back to [B, T, H, Dh]."""
    q, k, v = (qkv[:, :, i] for i in range(3))
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    a = dense_attention(q, k, v, context) if block is None else banded_attention(
        q, k, v, context, block)
    return jnp.swapaxes(a, 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def window_attention(qkv, cos, sin, context: int, block: int | None) -> jnp.ndarray:
    """Offline causal windowed attention with RoPE from the in_proj rows.

    qkv [B, T, 3, H, Dh] (q | k | v, unrotated), cos, sin [B or 1, T, Dh/2] (`rope_tables`)
    -> [B, T, H, Dh]. On CPU with float32 rows, the fused `secoustic_jax.kernels`
    custom call (rotation, scores, softmax and weighted sum per block of 16 queries, in
    cache): the 86 Hz stack at T = 861 takes 143 instead of 279 ms on 2 Zen 5 cores, at
    the same error against float64 (bench/NOTES.md section 8). Elsewhere, and for bf16
    rows, `_window_reference` (RoPE + banded, or dense when block is None). The gradient
    is always the reference's: for dense inputs (training crops) the differentiated
    forward is the reference's too, for banded ones the kernel's, with the bands
    recomputed in the backward pass (as their checkpointed blocks are anyway).
    """
    from secoustic_jax import kernels  # leaf module: jax only

    if qkv.dtype != jnp.float32:
        return _window_reference(qkv, cos, sin, context, block)
    return kernels.cpu_or_default(
        qkv, cos, sin,
        cpu=lambda *a: kernels.window_attention(*a, context, 1.0 / math.sqrt(qkv.shape[-1])),
        default=lambda *a: _window_reference(*a, context, block))


def _window_fwd(qkv, cos, sin, context, block):
    if block is None:
        # Short inputs (training crops): the dense reference's own forward, whose saved
        # probabilities the backward reuses; the kernel would add a dense recompute.
        return jax.vjp(lambda *a: _window_reference(*a, context, block), qkv, cos, sin)
    # Banded: its blocks are checkpointed, so the backward recomputes them anyway.
    return window_attention(qkv, cos, sin, context, block), (qkv, cos, sin)


def _window_bwd(context, block, residuals, g):
    if block is None:
        return residuals(g)  # the vjp function of the dense forward
    _, vjp = jax.vjp(lambda *a: _window_reference(*a, context, block), *residuals)
    return vjp(g)


window_attention.defvjp(_window_fwd, _window_bwd)


# ---- streaming: ring KV cache ----------------------------------------------------------

class KVCache(NamedTuple):
    """Ring KV cache of one attention layer (a pytree of fixed-shape arrays).

    keys, values: [B, H, C, Dh] (rotated keys, as in the offline path);
    positions: [B, C] int32 absolute position stored in each slot, -1 = empty;
    counter: [B] int32 number of tokens this stream has processed (next position);
    slot: [B] int32 next ring slot to write, the same for every stream of the batch (a
      stream reset mid-batch keeps it: visibility is decided by `positions`, not by slot
      order), so a write is one shared-index scatter that XLA applies to the donated ring
      in place (a per-stream scatter at batch 1 became a dynamic-update-slice that XLA:CPU
      wrapped in copies of the whole ring: 2x the 86 Hz step).
    """

    keys: jnp.ndarray
    values: jnp.ndarray
    positions: jnp.ndarray
    counter: jnp.ndarray
    slot: jnp.ndarray


def init_kv_cache(batch: int, capacity: int, num_heads: int, head_dim: int,
                  dtype=jnp.float32) -> KVCache:
    """An empty cache. capacity must be >= context + chunk - 1 for chunks of `chunk` tokens.

    dtype bfloat16 gives rings of BF16_BITS (uint16 bit patterns of bf16 values; see
    `_ring_write`); every other dtype is stored as itself.
    """
    if batch < 1 or capacity < 1:
        raise ValueError(f"need batch, capacity >= 1, got {batch}, {capacity}")
    dtype = BF16_BITS if jnp.dtype(dtype) == jnp.bfloat16 else dtype
    shape = (batch, num_heads, capacity, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                   jnp.full((batch, capacity), -1, jnp.int32), jnp.zeros((batch,), jnp.int32),
                   jnp.zeros((batch,), jnp.int32))


def reset_kv_cache(cache: KVCache, reset) -> KVCache:
    """Clears the streams where reset [B] bool is True (slots empty, counter 0).

    Only positions and counters change: an empty slot (position -1) is masked to a -inf
    logit and its value is finite (`cache_attention` writes non-finite values as 0), so
    its stale contents contribute exactly zero. Rewriting every ring on each reset-masked
    step would move the whole cache through memory (the server passes a mask every step).
    The shared write slot is kept: the other streams of the batch go on writing there.
    """
    reset = jnp.asarray(reset, bool)
    if reset.shape != cache.counter.shape:
        raise ValueError(f"reset must be [B]={cache.counter.shape}, got {reset.shape}")
    return KVCache(cache.keys, cache.values, jnp.where(reset[:, None], -1, cache.positions),
                   jnp.where(reset, 0, cache.counter), cache.slot)


def _ring_write(ring, slots, x):
    """ring [B, H, C, Dh] with x [B, H, n, Dh] written at slots [n] (one shared scatter).

    A bf16 ring is held as its uint16 bit patterns (`init_kv_cache`), so the write is an
    integer scatter in place: XLA:CPU widens a bf16 scatter to float32 and narrows it back
    (the whole ring, twice per write: 250 ms of a 21.5 Hz step at batch 16), and a
    bitcast of a bf16 ring to uint16 around the scatter is materialised as copies (116 ms).
    """
    if ring.dtype == BF16_BITS:
        x = lax.bitcast_convert_type(x.astype(jnp.bfloat16), BF16_BITS)
    return ring.at[:, :, slots].set(x.astype(ring.dtype))


def cache_attention(cache: KVCache, q, k, v, context: int, scale: float):
    """Writes a chunk's keys/values into the ring, then attends from the chunk's queries.

    Args:
      cache: KVCache with capacity C >= context + c - 1.
      q, k, v: [B, H, c, Dh], already rotated at positions counter + 0..c-1.
    Returns:
      (new cache with counter and slot advanced by c, [B, H, c, Dh]).
    """
    c, cap = q.shape[2], cache.keys.shape[2]
    if cap < context + c - 1:
        raise ValueError(f"KV cache capacity {cap} < context {context} + chunk {c} - 1: the "
                         "chunk would overwrite keys its own first queries still need")
    pos = cache.counter[:, None] + jnp.arange(c, dtype=jnp.int32)  # [B, c]
    slots = (cache.slot[0] + jnp.arange(c, dtype=jnp.int32)) % cap  # shared by the batch
    # A NaN/Inf value (from a NaN input) stays out of the ring: once its slot is masked
    # (reset, or out of the window) 0 * NaN would still poison the softmax-weighted sum.
    # The chunk's own outputs below still carry it (through its keys and queries).
    v = jnp.where(jnp.isfinite(v), v, 0)
    if c == 1:
        # XLA rewrites a one-index scatter as a dynamic-update-slice, which XLA:CPU then
        # copies (the whole ring, twice, per layer: 2x the 86 Hz step); writing the row
        # twice at the same slot keeps a real scatter, which updates the donated ring in
        # place (same value both times, so the result is deterministic).
        slots, pos_w, k, v = (jnp.concatenate([a, a], axis=-2 if a.ndim == 4 else -1)
                              for a in (slots, pos, k, v))
    else:
        pos_w = pos
    keys = _ring_write(cache.keys, slots, k)
    values = _ring_write(cache.values, slots, v)
    positions = cache.positions.at[:, slots].set(pos_w)
    mask = window_mask(pos, positions, context)[:, None]  # [B, 1, c, C]
    out = attend_ring(q, keys, values, mask, scale)
    return KVCache(keys, values, positions, cache.counter + c, (cache.slot + c) % cap), out


class MultiHeadAttention(nn.Module):
    """Fused-projection causal attention with RoPE (official StreamingMultiheadAttention).

    Children: `in_proj` (kernel [d, 3d], columns q | k | v, head j = 64 j .. 64 j + 63
    inside each), `out_proj` (kernel [d, d]); no biases.
    """

    cfg: TransformerConfig
    compute_dtype: str = "float32"

    def setup(self):
        d = self.cfg.d_model
        dt = dtype_of(self.compute_dtype)
        self.in_proj = nn.Dense(3 * d, use_bias=False, dtype=dt, kernel_init=nn.with_logical_partitioning(
            torch_uniform(d), (EMBED, QKV)))
        self.out_proj = nn.Dense(d, use_bias=False, dtype=dt, kernel_init=nn.with_logical_partitioning(
            torch_uniform(d), (HEADS, EMBED)))

    def _qkv(self, x, positions):
        """x [B, T, d] -> rotated q, k and v, each [B, H, T, Dh]."""
        b, t, _ = x.shape
        h, dh = self.cfg.num_heads, self.cfg.head_dim
        q, k, v = jnp.split(self.in_proj(x).reshape(b, t, 3, h, dh), 3, axis=2)
        q = apply_rope(q[:, :, 0], positions, self.cfg.max_period)
        k = apply_rope(k[:, :, 0], positions, self.cfg.max_period)
        return (jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2), jnp.swapaxes(v[:, :, 0], 1, 2))

    def _out(self, a):
        """[B, H, T, Dh] -> [B, T, d] through out_proj."""
        b, h, t, dh = a.shape
        return self.out_proj(jnp.swapaxes(a, 1, 2).reshape(b, t, h * dh))

    def __call__(self, x, positions):
        """Offline attention. x: [B, T, d]; positions [T] or [B, T] (RoPE only). -> [B, T, d]."""
        cfg = self.cfg
        b, t, d = x.shape
        qkv = self.in_proj(x).reshape(b, t, 3, cfg.num_heads, cfg.head_dim)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.max_period)
        # Short inputs take the dense form off CPU and in the backward pass (fewer, larger
        # dots than the bands there); on CPU the forward is the fused kernel either way.
        block = None if cfg.uses_dense_attention(t) else cfg.attention_block
        a = window_attention(qkv, cos, sin, cfg.context, block)
        return self.out_proj(a.reshape(b, t, d))

    def step(self, cache: KVCache, x, context: int | None = None):
        """Streaming step. x: [B, c, d] -> (cache, [B, c, d]); positions come from the cache."""
        c = x.shape[1]
        positions = cache.counter[:, None] + jnp.arange(c, dtype=jnp.int32)
        q, k, v = self._qkv(x, positions)
        context = self.cfg.context if context is None else context
        cache, a = cache_attention(cache, q, k, v, context, 1.0 / math.sqrt(self.cfg.head_dim))
        return cache, self._out(a)
