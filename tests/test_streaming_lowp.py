"""bfloat16-weight streaming (streaming.lowp + the bf16 mat-vec kernel) == the offline codec
run with the same bf16-rounded weights held in float32 (issue 6 precision option)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _streaming_helpers import diverse_tiny, offline, speech_mel
from secoustic_jax.streaming import codec_steps as cs
from secoustic_jax.streaming.lowp import STACKS, bf16_weights
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
