"""bfloat16-weight streaming (streaming.lowp + the bf16 mat-vec kernel) == the offline codec
run with the same bf16-rounded weights held in float32 (issue 6 precision option)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _streaming_helpers import diverse_tiny, offline, speech_mel
from secoustic_jax.streaming import codec_steps as cs
import functools

from secoustic_jax.streaming.lowp import (DECODER_STACKS, STACKS, bf16_weights,
                                          dequantize_int8, int8_weights)
from secoustic_jax.streaming.server import _fused_jit, fused_step

# float32 accumulation order (sequential kernel vs XLA's blocked dot, ring vs banded
# attention) through 2 stacks; the bf16 rounding itself is the same on both sides.
MEL_ATOL = 5e-5


@pytest.mark.parametrize("preset", ["tiny", "tiny_21_5hz"])
def test_bf16_streaming_equals_offline_with_rounded_weights(preset, golden_dir):
    cfg, v, margin = diverse_tiny(preset)
    v16 = bf16_weights({"params": v["params"]})
    # Only transformer kernels are cast; SEANet, FSQ, LayerNorm stay float32.
    for path, leaf in jax.tree_util.tree_leaves_with_path(v16["params"]):
        name = jax.tree_util.keystr(path)
        cast = name.split("'")[1] in STACKS and name.endswith("['kernel']")
        assert (leaf.dtype == jnp.bfloat16) == (cast and leaf.ndim >= 2 and "dense_" not in name), name
    rounded = {"params": jax.tree.map(lambda x: x.astype(jnp.float32), v16["params"]),
               "batch_stats": v["batch_stats"]}
    n_tok = 40
    mel = speech_mel(golden_dir, n_tok * cfg.hop, row=3)
    g = np.zeros((1, cfg.transformer.d_model), np.float32)
    ref_t = offline(rounded, cfg, "encode", mel[None]).tokens[0]
    ref_m = offline(rounded, cfg, "decode_tokens", ref_t[None], g)[0]
    state = cs.init_state(v16, cfg, 1)
    toks, mels = [], []
    for i in range(n_tok):
        state, t, y = fused_step(v16, state, mel[None, i * cfg.hop:(i + 1) * cfg.hop], g)
        toks.append(np.asarray(t)[0])
        mels.append(np.asarray(y)[0])
    np.testing.assert_array_equal(np.concatenate(toks), ref_t)
    np.testing.assert_allclose(np.concatenate(mels), ref_m, atol=MEL_ATOL, rtol=0)
    assert len(np.unique(ref_t)) > 10
    # Every bf16 kernel of the three stacks a token-path step reads goes through the
    # custom call (none is silently widened into an XLA dot).
    used = ("vae_semantic_transformer", "semantic_connector", "decoder_transformer")
    n_bf16 = sum(leaf.dtype == jnp.bfloat16 for s in used
                 for leaf in jax.tree.leaves(v16["params"][s]))
    hlo = _fused_jit().lower(v16, cs.init_state(v16, cfg, 1), mel[None, :cfg.hop], g,
                             None).as_text()
    assert n_bf16 > 0 and hlo.count("custom_call @secoustic_bf16_matvec(") == n_bf16


def _rounding_kv(fn):
    """An offline attention whose keys and values are rounded to bf16 first (what a bf16
    KV ring stores); queries stay float32."""
    def wrapped(q, k, v, *args, **kwargs):
        r = lambda x: x.astype(jnp.bfloat16).astype(x.dtype)  # noqa: E731
        return fn(q, r(k), r(v), *args, **kwargs)
    return wrapped


def _float32_equivalent(tree):
    """The float32 weights narrow params stand for: bf16 widened, int8 kernels times their
    `kernel_scale` (which is dropped)."""
    if not isinstance(tree, dict):
        return tree.astype(jnp.float32)
    if "kernel_scale" in tree:
        out = {k: _float32_equivalent(x) for k, x in tree.items() if k != "kernel_scale"}
        out["kernel"] = dequantize_int8(tree["kernel"], tree["kernel_scale"])
        return out
    return {k: _float32_equivalent(x) for k, x in tree.items()}


INT8_DECODER = functools.partial(int8_weights, stacks=DECODER_STACKS)


@pytest.mark.parametrize("narrow", [bf16_weights, int8_weights, INT8_DECODER],
                         ids=["bf16", "int8", "int8_decoder"])
@pytest.mark.parametrize("preset", ["tiny", "tiny_21_5hz"])
def test_narrow_weights_bf16_kv_streaming_equals_offline(preset, narrow, golden_dir,
                                                         monkeypatch):
    """bf16 or int8 weights and a bf16 KV ring (kv_dtype="bfloat16"), two streams at once
    (the batched kernel path) == offline with the float32 weights they stand for and
    bf16-rounded keys/values, past the attention window."""
    from secoustic_jax.layers import attention

    cfg, v, _ = diverse_tiny(preset)
    v16 = narrow({"params": v["params"]})
    rounded = {"params": _float32_equivalent(v16["params"]), "batch_stats": v["batch_stats"]}
    n_tok = cfg.transformer.context + 30
    mel = np.stack([speech_mel(golden_dir, n_tok * cfg.hop, row=r) for r in (1, 4)])
    g = np.zeros((2, cfg.transformer.d_model), np.float32)
    monkeypatch.setattr(attention, "dense_attention", _rounding_kv(attention.dense_attention))
    monkeypatch.setattr(attention, "banded_attention", _rounding_kv(attention.banded_attention))
    ref_t = offline(rounded, cfg, "encode", mel).tokens
    ref_m = offline(rounded, cfg, "decode_tokens", ref_t, g)
    monkeypatch.undo()
    state = cs.init_state(v16, cfg, 2, kv_dtype="bfloat16")
    assert state.enc.transformer[0].keys.dtype == jnp.uint16  # bf16 bit patterns
    toks, mels = [], []
    for i in range(n_tok):
        state, t, y = fused_step(v16, state, mel[:, i * cfg.hop:(i + 1) * cfg.hop], g)
        toks.append(np.asarray(t))
        mels.append(np.asarray(y))
    np.testing.assert_array_equal(np.concatenate(toks, axis=1), ref_t)
    # As MEL_ATOL: float32 summation order only; the bf16 roundings are the same both sides.
    np.testing.assert_allclose(np.concatenate(mels, axis=1), ref_m, atol=MEL_ATOL, rtol=0)
    assert len(np.unique(ref_t)) > 10
    # (The tiny model's LayerScale keeps attention's share of the mel below MEL_ATOL, so
    # the rounding itself is checked where it is visible: tests/test_attention.py.)
    hlo = _fused_jit().lower(v16, cs.init_state(v16, cfg, 2, kv_dtype="bfloat16"),
                             mel[:, :cfg.hop], g, None).as_text()
    rings = 3 * cfg.transformer.num_layers  # encoder, connector and decoder stacks
    assert hlo.count("custom_call @secoustic_bf16_scores(") == rings
    assert hlo.count("custom_call @secoustic_bf16_mix(") == rings
    matvec = "bf16" if narrow is bf16_weights else "int8"
    narrowed = 2 * cfg.transformer.num_layers if narrow is INT8_DECODER else rings
    assert hlo.count(f"custom_call @secoustic_{matvec}_matvec(") == 4 * narrowed


def test_decoder_only_narrowing_keeps_float32_tokens_bit_for_bit(golden_dir):
    """int8 (or bf16) connector + decoder stacks: the encoder half is the float32 code, so
    the tokens are exactly the float32 stream's while the mel follows the int8 decoder."""
    cfg, v, _ = diverse_tiny("tiny")
    base = {"params": v["params"], "batch_stats": v["batch_stats"]}
    mel = speech_mel(golden_dir, 60 * cfg.hop, row=2)[None]
    g = np.zeros((1, cfg.transformer.d_model), np.float32)

    def run(variables):
        state, toks, mels = cs.init_state(variables, cfg, 1), [], []
        for i in range(60):
            state, t, y = fused_step(cs.variables_of(variables), state,
                                     mel[:, i * cfg.hop:(i + 1) * cfg.hop], g)
            toks.append(np.asarray(t))
            mels.append(np.asarray(y))
        return np.concatenate(toks, 1), np.concatenate(mels, 1)

    t32, m32 = run(base)
    for narrow in (INT8_DECODER, functools.partial(bf16_weights, stacks=DECODER_STACKS)):
        t, m = run(narrow(base))
        np.testing.assert_array_equal(t, t32)
        assert 0 < np.abs(m - m32).max() < 0.05  # the decoder is narrowed, and only a little
    with pytest.raises(ValueError, match="stacks must be"):
        int8_weights(base, stacks=("fsq",))


def test_kv_dtype_is_validated():
    cfg, v, _ = diverse_tiny("tiny")
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        cs.init_state(v, cfg, 1, kv_dtype="float16")
