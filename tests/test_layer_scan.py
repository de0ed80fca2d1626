"""Scanned transformer layers (one body over stacked params) with remat == the unrolled stack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import TransformerConfig
from secoustic_jax.config.train import ExecutionConfig
from secoustic_jax.layers.transformer import ProjectedTransformer
from secoustic_jax.training.model import resolve_execution

CFG = TransformerConfig(d_model=32, num_heads=4, num_layers=3, dim_feedforward=64, context=20,
                        attention_block=8, layer_scale=0.5)


def _loss_and_grads(scan: bool, remat: str, t: int):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, t, 32)), jnp.float32)
    params = ProjectedTransformer(CFG).init(jax.random.PRNGKey(0), x)
    model = ProjectedTransformer(CFG, scan_layers=scan, remat=remat)

    def loss(p):
        return jnp.mean(model.apply(p, x) ** 2)

    return jax.value_and_grad(loss)(params), params


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
@pytest.mark.parametrize("t", [24, 70])  # dense and banded attention
def test_scanned_layers_equal_the_unrolled_stack(remat, t):
    (want, g_want), params = _loss_and_grads(False, "none", t)
    (got, g_got), _ = _loss_and_grads(True, remat, t)
    # Same ops per layer; XLA may fuse the scanned body differently (float32 rounding).
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # The parameter tree is the unrolled one either way (checkpoints, export).
    assert sorted(params["params"]) == ["layers_0", "layers_1", "layers_2"]


def test_scanned_step_compiles_one_layer_body():
    x = jnp.zeros((1, 24, 32))
    params = ProjectedTransformer(CFG).init(jax.random.PRNGKey(0), x)
    count = lambda m: jax.jit(m.apply).lower(params, x).as_text().count("stablehlo.dot_general")  # noqa: E731
    # Unrolled: every layer's matmuls appear once per layer; scanned: once in the body.
    assert count(ProjectedTransformer(CFG)) == 3 * count(ProjectedTransformer(CFG, scan_layers=True))


def test_remat_needs_the_scan_and_a_known_policy():
    x = jnp.zeros((1, 8, 32))
    params = ProjectedTransformer(CFG).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="remat must be one of"):
        ProjectedTransformer(CFG, remat="full").apply(params, x)
    with pytest.raises(ValueError, match="remat must be one of"):
        ProjectedTransformer(CFG, scan_layers=True, remat="some").apply(params, x)
    with pytest.raises(ConfigError, match="needs execution.scan_layers"):
        ExecutionConfig(scan_layers="off", remat="full").validate()


def test_auto_execution_is_unrolled_on_cpu():
    assert jax.default_backend() == "cpu"
    assert resolve_execution(ExecutionConfig()) == (False, "none")
    assert resolve_execution(ExecutionConfig(scan_layers="on")) == (True, "none")
    assert resolve_execution(ExecutionConfig(scan_layers="on", remat="dots")) == (True, "dots")
