"""The projected causal transformer stack (model.md §5); the codec has four of them.

Pre-norm layers, no final norm, no input/output projections (input dim = output dim = d):
    x = x + ls1 * attn(LN1(x))
    x = x + ls2 * linear2(gelu_exact(linear1(LN2(x))))

Mixed precision: parameters stay float32 (param dtype); matmuls run in `compute_dtype`;
LayerNorm statistics and the attention softmax are float32; the residual stream keeps
the float32 of the LayerScale product, so bf16 rounding does not accumulate across layers.

Streaming: `init_state(batch, capacity)` returns one ring KVCache per layer and
`step(state, x_chunk)` equals the offline call on the concatenated chunks (see
docs/layers_transformer.md for the cache contract).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.model import TransformerConfig
from secoustic_jax.layers.attention import (KVCache, MultiHeadAttention, init_kv_cache,
                                            reset_kv_cache)
from secoustic_jax.layers.common import (BATCH, EMBED, LENGTH, MLP, NORM, constant, dtype_of, param,
                                         torch_uniform)


class LayerScale(nn.Module):
    """Per-channel residual gain, param `scale` [d] initialised to cfg.layer_scale."""

    dim: int
    init_value: float

    @nn.compact
    def __call__(self, x):
        """x [..., d] (any float dtype) -> float32-promoted x * scale."""
        return param(self, "scale", constant(self.init_value), (self.dim,), (NORM,)) * x


def _layer_norm(cfg: TransformerConfig, dtype) -> nn.LayerNorm:
    # Two-pass variance (use_fast_variance=False) like torch; statistics always in float32.
    return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=dtype, use_fast_variance=False,
                        force_float32_reductions=True,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (NORM,)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (NORM,)))


class TransformerLayer(nn.Module):
    """One pre-norm layer: children norm1, norm2, self_attn, linear1, linear2, layer_scale_1/2."""

    cfg: TransformerConfig
    compute_dtype: str = "float32"

    def setup(self):
        cfg, dt = self.cfg, dtype_of(self.compute_dtype)
        d, f = cfg.d_model, cfg.dim_feedforward
        self.norm1 = _layer_norm(cfg, dt)
        self.norm2 = _layer_norm(cfg, dt)
        self.self_attn = MultiHeadAttention(cfg, self.compute_dtype)
        self.linear1 = nn.Dense(f, use_bias=False, dtype=dt, kernel_init=nn.with_logical_partitioning(
            torch_uniform(d), (EMBED, MLP)))
        self.linear2 = nn.Dense(d, use_bias=False, dtype=dt, kernel_init=nn.with_logical_partitioning(
            torch_uniform(f), (MLP, EMBED)))
        self.layer_scale_1 = LayerScale(d, cfg.layer_scale)
        self.layer_scale_2 = LayerScale(d, cfg.layer_scale)

    def _feed_forward(self, x):
        """Second residual branch, x [B, T, d] -> [B, T, d].

        The MLP runs on [B*T, d] rows: XLA:CPU differentiates exact GELU between two
        [B, T, .] matmuls 2.3x slower than the same rows flattened (measured 123 vs 52 ms
        at [4, 260, 512] -> 2048), with the same forward values.
        """
        b, t, d = x.shape
        h = self.norm2(x).reshape(b * t, d)
        h = self.linear2(jax.nn.gelu(self.linear1(h), approximate=False)).reshape(b, t, d)
        return x + self.layer_scale_2(h)

    def __call__(self, x, positions):
        """Offline. x: [B, T, d]; positions [T] or [B, T] absolute. -> [B, T, d].

        The residual stream is annotated [batch, length, embed]: under the trainer's
        logical axis rules it is sharded over the batch axes (a no-op elsewhere)."""
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), positions))
        return nn.with_logical_constraint(self._feed_forward(x), (BATCH, LENGTH, EMBED))

    def step(self, cache: KVCache, x, context: int | None = None):
        """Streaming. x: [B, c, d] -> (cache, [B, c, d])."""
        cache, a = self.self_attn.step(cache, self.norm1(x), context)
        x = x + self.layer_scale_1(a)
        return cache, self._feed_forward(x)


# jax.checkpoint policies of the scanned layer body (ProjectedTransformer.remat).
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}

LONG_FORM_CHUNK = 8192  # frames per window of the long-form offline path (~95 s at 86 Hz)


def _chunked_layer(layer: TransformerLayer, params, x, positions, halo: int,
                   chunk: int = LONG_FORM_CHUNK):
    """One layer over a long input in windows, so temporaries are O(chunk), not O(T).

    Window c covers input rows [max(c*chunk - halo, 0), +chunk+halo) and yields output rows
    [c*chunk, (c+1)*chunk): with halo = context - 1 every kept row sees all of its keys, and
    every row is computed by the same position-wise ops as the whole-input call (the halo
    rows are recomputed and discarded: halo/chunk = 3 % extra work). Rows beyond T are
    zeros appended at the end, which causal attention never lets earlier rows see.

    layer: an unbound TransformerLayer; params: its params; x [B, T, d]; positions [T]|[B, T].
    Returns [B, T, d].
    """
    b, t, d = x.shape
    n = -(-t // chunk)
    total = max(n * chunk, chunk + halo)
    xp = jnp.pad(x, ((0, 0), (0, total - t), (0, 0)))
    pos = jnp.broadcast_to(positions, (b, t)) if positions.ndim == 2 else positions[None]
    last = pos[:, -1:] + 1 + jnp.arange(total - t, dtype=pos.dtype)  # continue the count
    pos = jnp.concatenate([pos, jnp.broadcast_to(last, (pos.shape[0], total - t))], axis=1)

    def window(c):
        start = jnp.maximum(c * chunk - halo, 0)
        xw = jax.lax.dynamic_slice_in_dim(xp, start, chunk + halo, axis=1)
        pw = jax.lax.dynamic_slice_in_dim(pos, start, chunk + halo, axis=1)
        pw = pw[0] if positions.ndim == 1 else pw
        y = layer.apply({"params": params}, xw, pw)
        return jax.lax.dynamic_slice_in_dim(y, c * chunk - start, chunk, axis=1)

    out = jax.lax.map(window, jnp.arange(n))  # [n, B, chunk, d]
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, d)[:, :t].astype(x.dtype)


class ProjectedTransformer(nn.Module):
    """Stack of cfg.num_layers TransformerLayers named layers_0 .. layers_{N-1}.

    Attributes:
      cfg: TransformerConfig.
      compute_dtype: "float32" or "bfloat16" (matmul dtype; params stay float32).
      official_streaming: emulate the official ring-cache off-by-one in `step` (model.md
        16.2): effective context cfg.context - 1 at every position, which is what the
        official streaming computes (golden `stream_*` arrays). Offline is unaffected.
      scan_layers: run the offline layers as one `lax.scan` over their stacked params (one
        compiled layer body instead of num_layers copies). The parameter tree is the same
        `layers_i` either way, so checkpoints and exports do not depend on it.
      remat: REMAT_POLICIES key, the `jax.checkpoint` policy of the scanned layer body:
        "none" keeps every activation for the backward pass, "full" recomputes the layer,
        "dots" saves only the matmul outputs. Needs scan_layers.
    """

    cfg: TransformerConfig
    compute_dtype: str = "float32"
    official_streaming: bool = False
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        self.layers = [TransformerLayer(self.cfg, self.compute_dtype)
                       for _ in range(self.cfg.num_layers)]

    def _check(self, x):
        if x.ndim != 3 or x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"ProjectedTransformer expects [B, T, {self.cfg.d_model}], got {x.shape}")
        if x.shape[1] < 1:
            raise ValueError("ProjectedTransformer needs at least one frame")

    def __call__(self, x, positions_offset=0):
        """Offline. x: [B, T, d]; positions_offset int or [B] int (RoPE positions start).

        Returns [B, T, d] (float32 unless x is wider).
        """
        self._check(x)
        offset = jnp.asarray(positions_offset, jnp.int32)
        if offset.ndim not in (0, 1):
            raise ValueError(f"positions_offset must be a scalar or [B], got {offset.shape}")
        positions = offset[..., None] + jnp.arange(x.shape[1], dtype=jnp.int32)  # [T] | [B, T]
        halo = self.cfg.context - 1
        long_form = x.shape[1] > LONG_FORM_CHUNK + halo
        if self.remat not in REMAT_POLICIES or (self.remat != "none" and not self.scan_layers):
            raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)} (and needs "
                             f"scan_layers), got {self.remat!r}")
        if self.is_initializing() or not (long_form or self.scan_layers):
            for layer in self.layers:
                x = layer(x, positions)
            return x
        # Layers as one scan over stacked params: the carried [B, T, d] buffer is reused, so
        # memory does not grow with depth (a Python loop of 8 chunked layers kept one
        # [B, T, d] buffer per layer alive: 5.8 GB instead of 1.4 GB at T = 310 080).
        params = nn.meta.unbox(self.variables["params"])
        stacked = jax.tree_util.tree_map(lambda *p: jnp.stack(p), *[
            params[f"layers_{i}"] for i in range(self.cfg.num_layers)])
        layer = TransformerLayer(self.cfg, self.compute_dtype, parent=None)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # LayerScale output dtype
        if long_form:
            def body(h, p):
                return _chunked_layer(layer, p, h, positions, halo)
        else:
            def body(h, p):
                return layer.apply({"params": p}, h, positions).astype(h.dtype)
        if self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
        return jax.lax.scan(lambda h, p: (body(h, p), None), x, stacked)[0]

    @property
    def streaming_context(self) -> int:
        """Attention window used by `step`."""
        return self.cfg.context - 1 if self.official_streaming else self.cfg.context

    def init_state(self, batch: int, capacity: int | None = None) -> tuple[KVCache, ...]:
        """Empty streaming state: one KVCache per layer.

        capacity defaults to the streaming context (enough for 1-token steps); chunks of
        c tokens need capacity >= context + c - 1 (checked in `step`).
        """
        capacity = self.streaming_context if capacity is None else capacity
        cfg = self.cfg
        return tuple(init_kv_cache(batch, capacity, cfg.num_heads, cfg.head_dim,
                                   dtype_of(self.compute_dtype)) for _ in range(cfg.num_layers))

    def step(self, state, x_chunk, reset=None, context: int | None = None):
        """One streaming call. state: from init_state; x_chunk [B, c, d]; reset [B] bool|None;
        context: the attention window (default `streaming_context`).

        Streams with reset=True are cleared (empty cache, position 0) before the chunk.
        Returns (state, y [B, c, d]); y equals the offline output at those positions.
        """
        self._check(x_chunk)
        if len(state) != self.cfg.num_layers:
            raise ValueError(f"state has {len(state)} layer caches, model has {self.cfg.num_layers}")
        context = self.streaming_context if context is None else context
        new_state = []
        for layer, cache in zip(self.layers, state):
            if reset is not None:
                cache = reset_kv_cache(cache, reset)
            cache, x_chunk = layer.step(cache, x_chunk, context)
            new_state.append(cache)
        return tuple(new_state), x_chunk
