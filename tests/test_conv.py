"""CausalConv1d / CausalConvTranspose1d: torch parity, scatter-add reference, init, streaming."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.layers.conv import (CausalConv1d, CausalConvTranspose1d,
                                       extra_right_padding)

torch = pytest.importorskip("torch")
F = torch.nn.functional

# float32 convs summed in a different order than torch/numpy: O(1e-6) relative error.
ATOL = 2e-5


def _init(module, x, seed=0):
    variables = module.init(jax.random.PRNGKey(seed), x)
    return nn.meta.unbox(variables)


def _torch_causal_conv(x, kernel, bias, k, s, d):
    """Reference: torch Conv1d with explicit causal F.pad (left k_eff - s, right E)."""
    k_eff = (k - 1) * d + 1
    length = x.shape[1]
    extra = extra_right_padding(length, k, s, d)
    xt = torch.from_numpy(np.array(x)).permute(0, 2, 1)  # [B, C, L]
    xt = F.pad(xt, (k_eff - s, extra))
    w = torch.from_numpy(np.array(kernel)).permute(2, 1, 0)  # [k, in, out] -> [out, in, k]
    y = F.conv1d(xt, w, torch.from_numpy(np.array(bias)), stride=s, dilation=d)
    return y.permute(0, 2, 1).numpy()


@pytest.mark.parametrize("k,s,d,length", [(7, 1, 1, 23), (3, 1, 2, 17), (4, 2, 1, 11),
                                          (4, 2, 1, 12), (2, 1, 1, 9), (1, 1, 1, 5),
                                          (5, 3, 2, 14)])
def test_conv1d_matches_torch(k, s, d, length, rng):
    x = jnp.asarray(rng.standard_normal((2, length, 6)), jnp.float32)
    conv = CausalConv1d(5, k, s, d)
    params = _init(conv, x)["params"]
    y = conv.apply({"params": params}, x)
    assert y.shape == (2, -(-length // s), 5)
    ref = _torch_causal_conv(x, params["kernel"], params["bias"], k, s, d)
    np.testing.assert_allclose(np.asarray(y), ref, atol=ATOL)


def test_extra_padding_formula():
    for length in range(1, 30):
        assert extra_right_padding(length, 4, 2) == length % 2  # model.md §4
        assert extra_right_padding(length, 7, 1) == 0
        for s in (1, 2, 3):
            assert extra_right_padding(length, 2 * s, s) == (-length) % s


def _scatter_add_transposed(x, kernel, bias, s):
    """Direct numpy y[s*t + j] += x[t] @ kernel[j], bias everywhere, trim k - s on the right."""
    b, length, _ = x.shape
    k, _, c_out = kernel.shape
    full = np.zeros((b, (length - 1) * s + k, c_out), np.float64)
    for t in range(length):
        for j in range(k):
            full[:, s * t + j] += x[:, t].astype(np.float64) @ kernel[j].astype(np.float64)
    return full[:, : s * length] + bias


@pytest.mark.parametrize("k,s,length", [(4, 2, 9), (2, 1, 7), (6, 3, 5), (3, 3, 4), (5, 2, 1)])
def test_conv_transpose_matches_torch_and_scatter_add(k, s, length, rng):
    x = jnp.asarray(rng.standard_normal((2, length, 6)), jnp.float32)
    conv = CausalConvTranspose1d(5, k, s)
    params = _init(conv, x)["params"]
    y = np.asarray(conv.apply({"params": params}, x))
    assert y.shape == (2, s * length, 5)
    kernel, bias = np.array(params["kernel"]), np.array(params["bias"])
    np.testing.assert_allclose(y, _scatter_add_transposed(np.asarray(x), kernel, bias, s),
                               atol=ATOL)
    # torch stores [in, out, k]; the contract is kernel[j] = W_torch[:, :, j] (unflipped).
    w = torch.from_numpy(kernel).permute(1, 2, 0)
    yt = F.conv_transpose1d(torch.from_numpy(np.array(x)).permute(0, 2, 1), w,
                            torch.from_numpy(bias), stride=s)
    yt = yt[:, :, : yt.shape[-1] - (k - s)].permute(0, 2, 1).numpy()
    np.testing.assert_allclose(y, yt, atol=ATOL)


def test_torch_default_init_bounds():
    x = jnp.zeros((1, 8, 32))
    boxed = CausalConv1d(64, 4, 2).init(jax.random.PRNGKey(0), x)["params"]
    assert boxed["kernel"].names == ("conv_k", "conv_in", "conv_out")
    kernel = np.asarray(nn.meta.unbox(boxed)["kernel"])
    bound = 1 / np.sqrt(32 * 4)  # torch Conv1d fan_in = in * k
    assert kernel.shape == (4, 32, 64)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    params = _init(CausalConvTranspose1d(16, 4, 2), x)["params"]
    bound_t = 1 / np.sqrt(16 * 4)  # torch ConvTranspose1d fan_in = weight.size(1) * k = out * k
    for name in ("kernel", "bias"):
        v = np.abs(np.asarray(params[name]))
        assert v.max() <= bound_t
    assert np.abs(np.asarray(params["kernel"])).max() > 0.95 * bound_t


def _random_chunks(rng, total, multiple):
    sizes, left = [], total
    while left > 0:
        n = min(left, multiple * int(rng.integers(0, 4)))  # 0-length chunks allowed
        sizes.append(n)
        left -= n
    return sizes


@pytest.mark.parametrize("k,s,d,length", [(7, 1, 1, 31), (3, 1, 2, 20), (4, 2, 1, 27),
                                          (4, 2, 1, 26), (2, 1, 1, 10), (6, 3, 1, 25)])
def test_conv1d_step_and_flush_equal_offline(k, s, d, length, rng):
    x = jnp.asarray(rng.standard_normal((2, length, 3)), jnp.float32)
    conv = CausalConv1d(4, k, s, d)
    variables = _init(conv, x)
    offline = np.asarray(conv.apply(variables, x))
    state = conv.init_state(2, 3)
    assert state.shape == (2, (k - 1) * d + 1 - s, 3)
    head = length - length % s
    outs, pos = [], 0
    for n in _random_chunks(rng, head, s):
        state, y = conv.apply(variables, state, x[:, pos:pos + n], method="step")
        outs.append(y)
        pos += n
    state, y = conv.apply(variables, state, x[:, pos:], method="flush")
    outs.append(y)
    streamed = np.concatenate([np.asarray(o) for o in outs], axis=1)
    np.testing.assert_allclose(streamed, offline, atol=ATOL)


@pytest.mark.parametrize("k,s", [(4, 2), (2, 1), (6, 3), (3, 3)])
def test_conv_transpose_step_equals_offline(k, s, rng):
    x = jnp.asarray(rng.standard_normal((2, 19, 3)), jnp.float32)
    conv = CausalConvTranspose1d(4, k, s)
    variables = _init(conv, x)
    offline = np.asarray(conv.apply(variables, x))
    state = conv.apply(variables, 2, method="init_state")  # also callable through apply
    assert state.shape == (2, k - s, 4)
    outs, pos = [], 0
    for n in _random_chunks(rng, 19, 1):
        state, y = conv.apply(variables, state, x[:, pos:pos + n], method="step")
        outs.append(np.asarray(y))
        pos += n
    np.testing.assert_allclose(np.concatenate(outs, axis=1), offline, atol=ATOL)


def test_bad_geometry_and_chunks_raise():
    x = jnp.zeros((1, 4, 2))
    with pytest.raises(ValueError, match="smaller than stride"):
        CausalConv1d(3, 1, 2).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="smaller than stride"):
        CausalConvTranspose1d(3, 1, 2).init(jax.random.PRNGKey(0), x)
    conv = CausalConv1d(3, 4, 2)
    variables = conv.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="not a multiple of stride"):
        conv.apply(variables, conv.init_state(1, 2), x[:, :3], method="step")


def test_causality_of_both_layers(rng):
    """Gradient of output frame t w.r.t. inputs after the frames it may see is exactly 0."""
    x = jnp.asarray(rng.standard_normal((1, 12, 2)), jnp.float32)
    conv = CausalConv1d(3, 4, 2)
    v = conv.init(jax.random.PRNGKey(1), x)
    g = jax.grad(lambda x: conv.apply(v, x)[0, 2].sum())(x)  # out 2 sees inputs <= 2*2+1
    assert np.all(np.asarray(g)[0, 6:] == 0) and np.any(np.asarray(g)[0, 5] != 0)
    convt = CausalConvTranspose1d(3, 4, 2)
    vt = convt.init(jax.random.PRNGKey(1), x)
    g = jax.grad(lambda x: convt.apply(vt, x)[0, 5].sum())(x)  # out 5 = 2*2 + 1 sees inputs <= 2
    assert np.all(np.asarray(g)[0, 3:] == 0) and np.any(np.asarray(g)[0, 2] != 0)


@pytest.mark.parametrize("shape", [(2, 50, 8, 6, 4, 2, 1), (2, 51, 8, 6, 3, 1, 3), (3, 40, 5, 7, 4, 3, 2),
                                   (2, 30, 16, 4, 7, 1, 1), (1, 9, 3, 2, 1, 1, 1)])
def test_conv1d_matmul_gradients_equal_xla_conv_gradients(shape):
    """conv1d_valid's per-tap matmul VJP == autodiff of lax.conv (strides, dilations, k=1)."""
    from jax import lax

    from secoustic_jax.ops.cpu import conv1d_valid
    from secoustic_jax.ops.reference import DIMENSION_NUMBERS

    b, length, c_in, c_out, k, s, d = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, length, c_in)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, c_in, c_out)), jnp.float32)
    ref_fn = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, (s,), "VALID", rhs_dilation=(d,), dimension_numbers=DIMENSION_NUMBERS)
    y = conv1d_valid(x, w, s, d)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref_fn(x, w)))  # same forward op
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    got = jax.vjp(lambda x, w: conv1d_valid(x, w, s, d), x, w)[1](g)
    ref = jax.vjp(ref_fn, x, w)[1](g)
    for a, r in zip(got, ref):
        # float32 sums of <= B*T'*k terms of unit-variance products in another order.
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=2e-5 * np.abs(r).max(), rtol=0)
