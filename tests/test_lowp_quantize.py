"""streaming.lowp weight formats: which leaves are narrowed, int8 quantisation error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.streaming.lowp import (STACKS, dequantize_int8, int8_weights,
                                          quantize_int8)


def test_quantize_int8_error_is_half_a_step_per_column():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 33)).astype(np.float32) * rng.uniform(0.01, 3, 33)
    w[:, 5] = 0.0  # an all-zero column
    q, scale = quantize_int8(w)
    assert q.dtype == jnp.int8 and scale.dtype == jnp.float32 and scale.shape == (33,)
    assert float(scale[5]) == 1.0 and not np.asarray(q[:, 5]).any()
    err = np.abs(np.asarray(dequantize_int8(q, scale)) - w)
    # Round to nearest: |w - q s| <= s / 2, plus float32 rounding of w / s and q * s.
    assert np.all(err <= np.asarray(scale) * (0.5 + 1e-5) + 1e-7 * np.abs(w))
    # The column peak maps to +-127 exactly: the whole int8 range is used.
    assert np.array_equal(np.abs(np.asarray(q)).max(0)[np.arange(33) != 5], np.full(32, 127))


def test_quantize_int8_refuses_non_finite_weights():
    w = np.ones((4, 4), np.float32)
    w[1, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        quantize_int8(w)


def test_int8_weights_narrow_only_transformer_kernels():
    from _streaming_helpers import diverse_tiny
    cfg, v, _ = diverse_tiny("tiny")
    v8 = int8_weights({"params": v["params"]})
    n_int8 = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(v8["params"]):
        name = jax.tree_util.keystr(path)
        stack = name.split("'")[1]
        kernel = name.endswith("['kernel']") and stack in STACKS and "dense_" not in name
        assert (leaf.dtype == jnp.int8) == kernel, name
        if kernel:
            n_int8 += 1
            scale = v8["params"]
            for p in path[:-1]:
                scale = scale[p.key]
            assert scale["kernel_scale"].shape == leaf.shape[1:]
    # in_proj, out_proj, linear1, linear2 of every layer of the four stacks.
    assert n_int8 == 4 * cfg.transformer.num_layers * len(STACKS)


def test_widened_matvec_is_the_kernels_reference():
    """The non-CPU branch of the interceptor (XLA widening) agrees with the CPU custom
    calls on the same narrow weights."""
    from secoustic_jax import kernels
    from secoustic_jax.ops.reference import narrow_matvec as widened_matvec

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((3, 256)), jnp.float32)
    w = rng.standard_normal((256, 96)).astype(np.float32) / 16
    b16 = jnp.asarray(w).astype(jnp.bfloat16)
    q, s = quantize_int8(w)
    # float32 sums of 256 terms in two orders: ~256 eps |x||w| ~ 1e-5 here.
    np.testing.assert_allclose(np.asarray(widened_matvec(x, b16)),
                               np.asarray(kernels.bf16_matvec(x, b16)), atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(widened_matvec(x, q, s)),
                               np.asarray(kernels.int8_matvec(x, q, s)), atol=2e-5, rtol=0)
