"""The fused CPU window attention (kernels.window_attention, layers.attention.window_attention)
against float64 and against the XLA form it replaces (RoPE + banded_attention)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax import kernels
from secoustic_jax.layers import attention as A
from secoustic_jax.layers.rope import rope_tables
from secoustic_jax.ops import cpu as ops_cpu
from secoustic_jax.ops import reference as ops_ref


def _inputs(b, t, h, d, seed, per_item_positions=False):
    rng = np.random.default_rng(seed)
    qkv = (2 * rng.standard_normal((b, t, 3, h, d))).astype(np.float32)
    pos = np.arange(t)[None] + (rng.integers(0, 5000, (b, 1)) if per_item_positions else 0)
    cos, sin = rope_tables(jnp.asarray(pos, jnp.int32), d)
    return jnp.asarray(qkv), cos, sin


def _float64(qkv, cos, sin, context):
    """RoPE with the same float32 tables, windowed softmax attention, all in float64."""
    x = np.asarray(qkv, np.float64)
    c, s = (np.asarray(a, np.float64)[:, :, None] for a in (cos, sin))

    def rot(z):
        zr, zi = z[..., 0::2], z[..., 1::2]
        out = np.empty_like(z)
        out[..., 0::2], out[..., 1::2] = zr * c - zi * s, zr * s + zi * c
        return out

    q, k, v = rot(x[:, :, 0]), rot(x[:, :, 1]), x[:, :, 2]
    t = q.shape[1]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    delta = np.arange(t)[:, None] - np.arange(t)[None]
    logits = np.where((delta >= 0) & (delta < context), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


# (B, T, H, D, context): the 86 Hz layer (threaded), several items with their own
# positions, lane tails (D/2 and windows not multiples of 16), context 1 and context > T.
SHAPES = [(1, 861, 8, 64, 250), (2, 130, 3, 40, 37), (3, 17, 2, 6, 5), (1, 1, 2, 16, 3),
          (2, 70, 1, 8, 1), (1, 20, 1, 10, 100)]


@pytest.mark.parametrize("b,t,h,d,context", SHAPES)
def test_kernel_is_as_accurate_as_the_xla_form(b, t, h, d, context):
    qkv, cos, sin = _inputs(b, t, h, d, seed=t + d, per_item_positions=b > 1)
    ref = _float64(qkv, cos, sin, context)
    out = np.asarray(jax.jit(lambda *a: kernels.window_attention(*a, context, d ** -0.5))(
        qkv, cos, sin))
    xla = np.asarray(jax.jit(lambda *a: ops_ref.window_attention(*a, context, 128))(qkv, cos, sin))
    assert out.shape == (b, t, h, d) and out.dtype == np.float32
    # Both are float32 computations of the same sums in other orders (and other exp
    # implementations), so their errors are alike but not equal (measured: max 1.14e-5 vs
    # 1.14e-5 at the 86 Hz shape, 8.6e-6 vs 5.9e-6 at the worst): the kernel may not be
    # worse than 2x the XLA form's largest error, nor 1.5x its mean error.
    err, xla_err = np.abs(out - ref), np.abs(xla - ref)
    assert err.max() <= 2 * xla_err.max() + 1e-6, (err.max(), xla_err.max())
    assert err.mean() <= 1.5 * xla_err.mean() + 1e-8, (err.mean(), xla_err.mean())


def test_shared_positions_broadcast_and_context_one_is_the_values():
    qkv, cos, sin = _inputs(3, 40, 2, 8, seed=1)
    assert cos.shape[0] == 1
    out = np.asarray(kernels.window_attention(qkv, cos, sin, 1, 0.3))
    np.testing.assert_array_equal(out, np.asarray(qkv[:, :, 2]))  # one key: p = 1 exactly
    full = kernels.window_attention(qkv, jnp.repeat(cos, 3, 0), jnp.repeat(sin, 3, 0), 9, 0.3)
    np.testing.assert_array_equal(np.asarray(full), np.asarray(
        kernels.window_attention(qkv, cos, sin, 9, 0.3)))


def test_rows_do_not_depend_on_the_thread_schedule():
    qkv, cos, sin = _inputs(2, 861, 8, 64, seed=2, per_item_positions=True)
    out = np.asarray(kernels.window_attention(qkv, cos, sin, 250, 0.125))  # threaded
    # Item 1, head 5 alone is below the threading threshold: the same rows bit for bit.
    one = kernels.window_attention(qkv[1:2, :, :, 5:6], cos[1:2], sin[1:2], 250, 0.125)
    np.testing.assert_array_equal(out[1:2, :, 5:6], np.asarray(one))
    np.testing.assert_array_equal(out, np.asarray(kernels.window_attention(qkv, cos, sin, 250, 0.125)))


@pytest.fixture
def kernel_staged(monkeypatch):
    """The layer stages the kernel even where its build is the scalar fallback (AVX2 hosts
    stage the reference for speed; the fallback computes the same values)."""
    monkeypatch.setattr(ops_cpu, "has_window_kernel", lambda: True)


@pytest.mark.parametrize("block", [16, None])  # banded (kernel forward) and dense
def test_gradient_is_the_reference_gradient(block, kernel_staged):
    qkv, cos, sin = _inputs(2, 50, 2, 8, seed=3, per_item_positions=True)
    w = jnp.asarray(np.random.default_rng(4).standard_normal((2, 50, 2, 8)), jnp.float32)

    def loss(f):
        return jax.jit(jax.grad(lambda x, c, s: jnp.sum(w * f(x, c, s)), argnums=(0, 1, 2)))

    got = loss(lambda *a: A.window_attention(*a, 12, block))(qkv, cos, sin)
    want = loss(lambda *a: ops_ref.window_attention(*a, 12, block))(qkv, cos, sin)
    for g, r in zip(got, want):  # the backward pass is the reference's own vjp
        np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


def test_layer_uses_the_kernel_and_bf16_rows_use_the_reference(kernel_staged):
    qkv, cos, sin = _inputs(1, 300, 2, 8, seed=5)
    hlo = jax.jit(lambda *a: A.window_attention(*a, 250, 128)).lower(qkv, cos, sin).as_text()
    assert "secoustic_window_attention" in hlo
    bf = qkv.astype(jnp.bfloat16)
    hlo = jax.jit(lambda *a: A.window_attention(*a, 250, 128)).lower(bf, cos, sin).as_text()
    assert "secoustic_window_attention" not in hlo


def test_a_non_finite_input_reaches_its_own_row():
    qkv, cos, sin = _inputs(1, 40, 1, 8, seed=6)
    qkv = qkv.at[0, 17, 2, 0, 3].set(jnp.nan)  # one value of v at t = 17
    out = np.asarray(kernels.window_attention(qkv, cos, sin, 5, 0.3))
    assert np.isnan(out[0, 17, 0, 3]) and np.isfinite(out[0, :16]).all()


def test_bad_operands_are_refused():
    qkv, cos, sin = _inputs(2, 10, 2, 8, seed=7)
    with pytest.raises(ValueError, match="qkv must be"):
        kernels.window_attention(qkv[:, :, :2], cos, sin, 4, 0.3)
    with pytest.raises(ValueError, match="D even"):
        kernels.window_attention(jnp.zeros((1, 10, 3, 2, 7)), cos, sin, 4, 0.3)
    with pytest.raises(ValueError, match="cos, sin"):
        kernels.window_attention(qkv, cos[:, :9], sin[:, :9], 4, 0.3)
    with pytest.raises(ValueError, match="context"):
        kernels.window_attention(qkv, cos, sin, 0, 0.3)


def _refuse_library():
    raise AssertionError("the kernel library was built or loaded")


def test_non_cpu_hosts_stage_the_xla_form_alone(monkeypatch):
    # On a TPU/GPU host (default backend not CPU) no CPU branch may be traced: tracing it
    # would build the C++ library there (lax.platform_dependent traces every branch).
    monkeypatch.setattr(kernels, "stage_cpu_branch", lambda: False)
    monkeypatch.setattr(kernels, "load", _refuse_library)
    qkv, cos, sin = _inputs(1, 300, 2, 8, seed=8)
    f = jax.jit(lambda *a: A.window_attention(*a, 250, 128))
    assert "secoustic_window_attention" not in f.lower(qkv, cos, sin).as_text()
    want = jax.jit(lambda *a: ops_ref.window_attention(*a, 250, 128))(qkv, cos, sin)
    np.testing.assert_array_equal(np.asarray(f(qkv, cos, sin)), np.asarray(want))
