"""Streaming state of the codec: fixed-shape pytrees, static metadata, per-stream reset.

A stream state is data (model.md §11 "Streaming API", issue 6): every leaf is an array
whose first axis is the batch of independent streams, and its shapes never change from
step to step, so a jitted step compiles once per chunk size and the state can be donated.

Layout (B streams, hop h, chunk capacity c tokens, context K = 250, or 249 when emulating
the official streaming):

    StreamState
      enc: EncoderState
        seanet       {layer_i: [B, k_eff - s, C_in] | ResBlock {block_1, block_3}}  causal
                     conv left context (layers.seanet.SEANetEncoder.init_state)
        transformer  tuple of num_layers KVCache: keys/values [B, H, K + c - 1, Dh],
                     positions [B, K + c - 1] int32 (-1 = empty), counter [B] int32,
                     slot [B] int32 (write slot, shared by the batch)
                     (semantic stack on the token path, acoustic stack on the acoustic path)
      dec: DecoderState
        connector    tuple of KVCache (token path; empty tuple on the acoustic path)
        transformer  tuple of KVCache (decoder_transformer)
        seanet       {layer_i: conv left context, or transposed-conv overlap tail
                     [B, k - s, C_out] stored as partial sums without bias}

The static part (`StreamMeta`: config, path, context, chunk capacity) lives in the pytree
definition, so a jitted step specialises on it and never mistakes one stream kind for
another.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from secoustic_jax.config.model import CodecConfig
from secoustic_jax.layers.attention import KVCache, init_kv_cache, reset_kv_cache
from secoustic_jax.layers.common import dtype_of
from secoustic_jax.layers.seanet import SEANetDecoder, SEANetEncoder

PATHS = ("tokens", "acoustic")


@dataclasses.dataclass(frozen=True)
class StreamMeta:
    """Static description of a stream state (hashable; part of the pytree definition).

    path: "tokens" (encode_step -> tokens, decode_step(tokens, G) -> mel) or "acoustic"
      (encode -> acoustic embedding A, decode_acoustic -> mel).
    context: attention window of every stack: cfg.transformer.context (exact, equals
      offline) or context - 1 (official_streaming: the official ring-cache off-by-one,
      model.md §16.2, golden stream_* arrays).
    chunk_tokens: the largest number of tokens one call may carry; KV rings hold
      context + chunk_tokens - 1 slots so a chunk never overwrites keys its own first
      queries still need (model.md §5).
    kv_dtype: dtype of the KV rings ("float32", or "bfloat16": half the ring bytes read
      per step, read by the CPU ring kernels; see layers.attention.attend_ring).
    """

    config: CodecConfig
    path: str = "tokens"
    context: int = 250
    chunk_tokens: int = 1
    kv_dtype: str = "float32"

    @property
    def capacity(self) -> int:
        return self.context + self.chunk_tokens - 1

    @property
    def official_streaming(self) -> bool:
        return self.context != self.config.transformer.context


@flax.struct.dataclass
class EncoderState:
    """SEANet encoder conv contexts + one transformer stack's KV rings (see module doc)."""

    seanet: dict
    transformer: tuple
    meta: StreamMeta = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class DecoderState:
    """Connector (token path) and decoder-transformer KV rings + SEANet decoder state."""

    connector: tuple
    transformer: tuple
    seanet: dict
    meta: StreamMeta = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class StreamState:
    """The whole codec stream: encoder half and decoder half (stepped independently)."""

    enc: EncoderState
    dec: DecoderState

    @property
    def meta(self) -> StreamMeta:
        return self.enc.meta

    @property
    def batch(self) -> int:
        return int(self.enc.transformer[0].counter.shape[0])


KV_DTYPES = ("float32", "bfloat16")


def make_meta(config: CodecConfig, path: str = "tokens", chunk_tokens: int = 1,
              official_streaming: bool = False, kv_dtype: str | None = None) -> StreamMeta:
    """Validated StreamMeta. chunk_tokens >= 1 bounds the tokens per call (ring size);
    kv_dtype None = the config's compute dtype."""
    if path not in PATHS:
        raise ValueError(f"stream path must be one of {PATHS}, got {path!r}")
    kv_dtype = config.compute_dtype if kv_dtype is None else kv_dtype
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {kv_dtype!r}")
    if int(chunk_tokens) < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    context = config.transformer.context - (1 if official_streaming else 0)
    if context < 1:
        raise ValueError(f"attention context {context} < 1")
    return StreamMeta(config, path, context, int(chunk_tokens), kv_dtype)


def _rings(meta: StreamMeta, batch: int) -> tuple:
    t = meta.config.transformer
    dt = dtype_of(meta.kv_dtype)
    return tuple(init_kv_cache(batch, meta.capacity, t.num_heads, t.head_dim, dt)
                 for _ in range(t.num_layers))


def init_encoder_state(meta: StreamMeta, batch: int) -> EncoderState:
    """Fresh encoder half: zero conv contexts (= offline left padding), empty rings."""
    cfg = meta.config
    seanet = SEANetEncoder(cfg.seanet).init_state(batch, jnp.float32)
    return EncoderState(seanet=seanet, transformer=_rings(meta, batch), meta=meta)


def init_decoder_state(meta: StreamMeta, batch: int) -> DecoderState:
    """Fresh decoder half (connector rings only on the token path)."""
    cfg = meta.config
    connector = _rings(meta, batch) if meta.path == "tokens" else ()
    seanet = SEANetDecoder(cfg.seanet).init_state(batch, jnp.float32)
    return DecoderState(connector=connector, transformer=_rings(meta, batch), seanet=seanet,
                        meta=meta)


def init_stream_state(meta: StreamMeta, batch: int) -> StreamState:
    """Fresh state for `batch` >= 1 independent streams."""
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return StreamState(init_encoder_state(meta, batch), init_decoder_state(meta, batch))


def apply_reset(state, fresh, reset):
    """Per-stream reset: leaves of streams with reset[b] = True are replaced by `fresh`.

    state, fresh: pytrees of the same structure whose leaves are batch-first [B, ...];
    reset: [B] bool, or None (no reset). Works on any state half.
    """
    if reset is None:
        return state
    reset = jnp.asarray(reset, bool)

    def pick(f, s):
        if isinstance(s, KVCache):  # keeps the batch-shared write slot of the ring
            return reset_kv_cache(s, reset)
        if reset.shape != (s.shape[0],):
            raise ValueError(f"reset mask must have shape [{s.shape[0]}], got {reset.shape}")
        return jnp.where(reset.reshape((-1,) + (1,) * (s.ndim - 1)), f, s)

    return jax.tree.map(pick, fresh, state, is_leaf=lambda x: isinstance(x, KVCache))


def state_signature(state) -> list[tuple]:
    """[(path, shape, dtype)] of every leaf: equal across steps iff no re-specialisation."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in leaves]
