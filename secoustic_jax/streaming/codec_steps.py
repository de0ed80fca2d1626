"""Streaming codec steps: state as data, one jitted call per chunk (issue 6, model.md §11).

    state = init_state(params, config, batch)                      # token path
    state, tokens = encode_step(params, state, mel_chunk)          # [B, m*hop, 80] -> [B, m]
    state, mel = decode_step(params, state, tokens, g)             # -> [B, m*hop, 80]
    state, tokens = encode_flush(params, state, mel_tail)          # 21.5 Hz tail (< hop frames)

Acoustic path: `init_state(..., path="acoustic")`, `encode_acoustic_step` -> A [B, m, d],
`decode_acoustic_step(params, state, A)` -> mel. Every step takes an optional per-stream
`reset` mask [B] bool: those streams start afresh (position 0, zero contexts) before the
chunk. Chunks carry m >= 1 whole tokens (m * hop mel frames), m <= the state's
chunk_tokens. Outputs equal this project's offline `SecoustiCodec.encode` /
`decode_tokens` / `decode_acoustic` (tokens identical, floats within float32 noise) at
every position, beyond the 250-frame window too; `official_streaming=True` reproduces the
official 249-key behaviour instead (model.md §16.2).

Each step is one `jax.jit` executable per (state kind, chunk length) with the state
donated; the data flow is the model's own (`SecoustiCodec.stream_encode` /
`stream_decode`, beside `encode` / `decode_tokens`), so streaming and offline share every
weight, every layer and every path through them.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.model import CodecConfig
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.streaming import lowp
from secoustic_jax.streaming.state import (DecoderState, EncoderState, StreamState,
                                           apply_reset, init_decoder_state,
                                           init_encoder_state, init_stream_state, make_meta)


def variables_of(params) -> dict:
    """Accepts `{"params": ...}` (optionally with batch_stats) or the bare params tree."""
    if isinstance(params, dict) and "params" in params:
        return {"params": nn.meta.unbox(params["params"])}
    return {"params": nn.meta.unbox(params)}


def init_state(params, config: CodecConfig, batch: int, *, path: str = "tokens",
               chunk_tokens: int = 1, official_streaming: bool = False,
               kv_dtype: str | None = None) -> StreamState:
    """Fresh state for `batch` streams. `params` is checked against the config's depth.

    chunk_tokens: the largest chunk (in tokens) any later call will carry.
    kv_dtype: "bfloat16" halves the KV ring bytes read per step (default: the config's
      compute dtype); see layers.attention.attend_ring.
    """
    layers = variables_of(params)["params"]["decoder_transformer"]
    n = sum(1 for k in layers if k.startswith("layers_"))
    if n != config.transformer.num_layers:
        raise ValueError(f"params have {n} decoder_transformer layers, config says "
                         f"{config.transformer.num_layers}")
    meta = make_meta(config, path, chunk_tokens, official_streaming, kv_dtype)
    return init_stream_state(meta, batch)


def _model(meta):
    return SecoustiCodec(meta.config)


def _apply(meta, variables, *args, method, **kwargs):
    """model.apply; with bf16 or int8 kernels (lowp.bf16_weights / int8_weights) the Dense
    layers run through `ops.narrow_matvec` (lowp.narrow_matvec) instead of XLA's narrow
    dots."""
    model = _model(meta)
    if lowp.has_narrow_weights(variables):
        with lowp.narrow_matvec():
            return model.apply(variables, *args, method=method, **kwargs)
    return model.apply(variables, *args, method=method, **kwargs)


def _check_chunk(meta, length: int, what: str, tail: bool = False) -> int:
    """Validates a chunk length (mel frames or tokens); returns its token count."""
    hop = meta.config.hop
    if length < 1:
        raise ValueError(f"{what}: empty chunk")
    if not tail and what.startswith("mel") and length % hop:
        raise ValueError(f"{what}: {length} mel frames is not a multiple of hop {hop} "
                         f"(use encode_flush for the last, partial chunk)")
    tokens = -(-length // hop) if what.startswith("mel") else length
    if tokens > meta.chunk_tokens:
        raise ValueError(f"{what}: {tokens} tokens per call exceeds the state's chunk_tokens "
                         f"{meta.chunk_tokens} (pass a larger chunk_tokens to init_state)")
    return tokens


def _encode_impl(variables, enc: EncoderState, mel, reset, flush: bool):
    """enc state + mel [B, L, 80] -> (enc state, tokens [B, m] int32 | A [B, m, d] f32):
    `SecoustiCodec.stream_encode`, the model's own streaming data flow."""
    meta = enc.meta
    enc = apply_reset(enc, init_encoder_state(meta, mel.shape[0]), reset)
    state, out = _apply(meta, variables, {"seanet": enc.seanet, "transformer": enc.transformer},
                        mel, method="stream_encode", path=meta.path, context=meta.context,
                        flush=flush)
    return enc.replace(**state), out


def _decode_impl(variables, dec: DecoderState, x, g, reset):
    """dec state + tokens [B, m] (and G [B, d]) or A [B, m, d] -> (state, mel [B, hop*m, 80]):
    `SecoustiCodec.stream_decode`."""
    meta = dec.meta
    dec = apply_reset(dec, init_decoder_state(meta, x.shape[0]), reset)
    state, mel = _apply(meta, variables, {"connector": dec.connector, "transformer":
                                          dec.transformer, "seanet": dec.seanet},
                        x, g, method="stream_decode", path=meta.path, context=meta.context)
    return dec.replace(**state), mel


@functools.cache
def _jitted(kind: str):
    """One jax.jit per step kind, state (argument 1) donated; jit caches per shape/meta."""
    if kind == "encode":
        return jax.jit(functools.partial(_encode_impl, flush=False), donate_argnums=1)
    if kind == "flush":
        return jax.jit(functools.partial(_encode_impl, flush=True), donate_argnums=1)
    return jax.jit(_decode_impl, donate_argnums=1)


def compilations(kind: str) -> int:
    """Executables compiled so far for "encode" | "flush" | "decode" (for tests/benchmarks)."""
    return _jitted(kind)._cache_size()


def _need_path(state: StreamState, path: str, fn: str) -> None:
    if not isinstance(state, StreamState):
        raise TypeError(f"{fn}: expected a StreamState from init_state, got {type(state)}")
    if state.meta.path != path:
        raise ValueError(f"{fn}: this state streams the {state.meta.path!r} path; "
                         f"init_state(..., path={path!r}) for this call")


def _mel(state, mel, fn, tail=False):
    mel = jnp.asarray(mel)
    cfg = state.meta.config
    if mel.ndim != 3 or mel.shape[0] != state.batch or mel.shape[2] != cfg.mel.n_mels:
        raise ValueError(f"{fn}: mel chunk must be [{state.batch}, L, {cfg.mel.n_mels}], "
                         f"got {mel.shape}")
    _check_chunk(state.meta, mel.shape[1], "mel chunk", tail)
    return mel


def _encode(params, state, mel, reset, path, fn, flush=False):
    _need_path(state, path, fn)
    mel = _mel(state, mel, fn, tail=flush)
    enc, out = _jitted("flush" if flush else "encode")(variables_of(params), state.enc, mel,
                                                        reset)
    return state.replace(enc=enc), out


def encode_step(params, state: StreamState, mel_chunk, reset=None):
    """Token path. mel_chunk [B, m*hop, 80] -> (state, tokens [B, m] int32)."""
    return _encode(params, state, mel_chunk, reset, "tokens", "encode_step")


def encode_acoustic_step(params, state: StreamState, mel_chunk, reset=None):
    """Acoustic path. mel_chunk [B, m*hop, 80] -> (state, A [B, m, d] float32)."""
    return _encode(params, state, mel_chunk, reset, "acoustic", "encode_acoustic_step")


def encode_flush(params, state: StreamState, mel_tail):
    """End of stream: the last L >= 1 mel frames (any L, e.g. T mod 4 at 21.5 Hz) ->
    (state, ceil(L/hop) tokens or A frames), applying the offline right padding of every
    strided conv (model.md §4 "End of stream"), so the last token equals the offline one.
    The state must not be stepped further (start again with a reset)."""
    return _encode(params, state, mel_tail, None, state.meta.path, "encode_flush", flush=True)


def _decode(params, state, x, g, reset, path, fn):
    _need_path(state, path, fn)
    x = jnp.asarray(x)
    if x.shape[0] != state.batch:
        raise ValueError(f"{fn}: batch {x.shape[0]} != state batch {state.batch}")
    _check_chunk(state.meta, x.shape[1], "token chunk")
    dec, mel = _jitted("decode")(variables_of(params), state.dec, x, g, reset)
    return state.replace(dec=dec), mel


def decode_step(params, state: StreamState, tokens, paralinguistic, reset=None):
    """Token path. tokens [B, m] int32, paralinguistic G [B, d] (computed once from a
    prompt) -> (state, mel [B, m*hop, 80]): the final values of those mel frames."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"decode_step: tokens must be int [B, m], got {tokens.dtype} "
                         f"{tokens.shape}")
    g = jnp.asarray(paralinguistic, jnp.float32)
    if g.shape != (tokens.shape[0], state.meta.config.transformer.d_model):
        raise ValueError(f"decode_step: paralinguistic must be [B, d] = "
                         f"[{tokens.shape[0]}, {state.meta.config.transformer.d_model}], "
                         f"got {g.shape}")
    return _decode(params, state, tokens.astype(jnp.int32), g, reset, "tokens", "decode_step")


def decode_acoustic_step(params, state: StreamState, acoustic, reset=None):
    """Acoustic path. A [B, m, d] -> (state, mel [B, m*hop, 80])."""
    a = jnp.asarray(acoustic, jnp.float32)
    if a.ndim != 3 or a.shape[2] != state.meta.config.transformer.d_model:
        raise ValueError(f"decode_acoustic_step: acoustic must be [B, m, d], got {a.shape}")
    return _decode(params, state, a, None, reset, "acoustic", "decode_acoustic_step")
