"""Long-form offline path of ProjectedTransformer: windows of LONG_FORM_CHUNK frames."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import secoustic_jax.layers.transformer as tr
from secoustic_jax.config.model import codec_preset

TINY = codec_preset("tiny").transformer


def test_windowed_equals_whole(monkeypatch):
    model = tr.ProjectedTransformer(TINY)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 700, TINY.d_model))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), x[:, :64]))
    for offset in (7, jnp.array([3, 50_000])):
        whole = np.asarray(jax.jit(model.apply)(params, x, offset))
        for chunk in (100, 300):  # 700 frames > chunk + 249: the windowed path is taken
            monkeypatch.setattr(tr, "LONG_FORM_CHUNK", chunk)
            got = np.asarray(jax.jit(model.apply)(params, x, offset))
            monkeypatch.setattr(tr, "LONG_FORM_CHUNK", 10**9)
            # Same per-row ops; only the matmul blocking of the shorter windows differs.
            np.testing.assert_allclose(got, whole, rtol=0, atol=2e-6)


def test_long_form_memory_does_not_grow_with_depth():
    t = 40_000  # > LONG_FORM_CHUNK + 249

    def temp(layers):
        cfg = dataclasses.replace(TINY, num_layers=layers)
        model = tr.ProjectedTransformer(cfg)
        p = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, cfg.d_model))))
        x = jax.ShapeDtypeStruct((1, t, cfg.d_model), jnp.float32)
        return jax.jit(model.apply).lower(p, x).compile().memory_analysis().temp_size_in_bytes

    one, four = temp(1), temp(4)
    # One [T, d] carry is reused by the layer scan; only the stacked params grow (tiny).
    assert four < 1.2 * one, (one, four)
