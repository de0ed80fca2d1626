"""Causal windowed multi-head attention (model.md §5) and its ring KV cache.

The attention maths (visibility rule, dense oracle, blocked banded form, RoPE rotation)
is the backend seam's (`secoustic_jax.ops`); this module holds the layer and the cache.
Visibility: key s is visible to query t iff 0 <= t - s < context.

Layouts: q, k, v are [B, H, T, Dh] (heads before time, the layout of the KV cache).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from secoustic_jax import ops
from secoustic_jax.config.model import TransformerConfig
from secoustic_jax.layers.common import EMBED, HEADS, QKV, dtype_of, torch_uniform
from secoustic_jax.layers.rope import apply_rope, rope_tables
from secoustic_jax.ops import (attend, banded_attention, dense_attention,  # noqa: F401 (re-exported)
                               window_attention, window_mask)


# ---- streaming: ring KV cache ----------------------------------------------------------

class KVCache(NamedTuple):
    """Ring KV cache of one attention layer (a pytree of fixed-shape arrays).

    keys, values: [B, H, C, Dh] (rotated keys, as in the offline path);
    positions: [B, C] int32 absolute position stored in each slot, -1 = empty;
    counter: [B] int32 number of tokens this stream has processed (next position);
    slot: [B] int32 next ring slot to write, the same for every stream of the batch (a
      stream reset mid-batch keeps it: visibility is decided by `positions`, not by slot
      order), so a write is one shared-index scatter, applied in place to a donated ring.
    """

    keys: jnp.ndarray
    values: jnp.ndarray
    positions: jnp.ndarray
    counter: jnp.ndarray
    slot: jnp.ndarray


def init_kv_cache(batch: int, capacity: int, num_heads: int, head_dim: int,
                  dtype=jnp.float32) -> KVCache:
    """An empty cache. capacity must be >= context + chunk - 1 for chunks of `chunk` tokens.

    The rings hold `dtype` values in the storage dtype the backend chooses
    (`ops.ring_dtype`: on CPU a bfloat16 ring is held as its uint16 bit patterns).
    """
    if batch < 1 or capacity < 1:
        raise ValueError(f"need batch, capacity >= 1, got {batch}, {capacity}")
    dtype = ops.ring_dtype(dtype)
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
    keys, values, positions = ops.ring_write(cache.keys, cache.values, cache.positions, slots,
                                             k, v, pos)
    mask = window_mask(pos, positions, context)[:, None]  # [B, 1, c, C]
    out = ops.attend_ring(q, keys, values, mask, scale)
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
        # Short inputs (training crops) take the dense form: fewer, larger dots than bands.
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
