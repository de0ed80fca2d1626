"""bf16 convolutions for HiFT: kernels.conv_bf16 against float64 of the same bf16 operands,
the interceptor's routing, and the opt-in Vocoder(conv_dtype="bfloat16")."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax import kernels
from secoustic_jax.config.hift import HiFTConfig
from secoustic_jax.model import hift_bf16
from secoustic_jax.ops import reference as ops_ref
from secoustic_jax.vocoder import Vocoder, load_vocoder

EPS = 2.0 ** -24  # float32 unit roundoff

needs_bf16 = pytest.mark.skipif(not kernels.has_bf16_conv(),
                                reason="this CPU build has no AVX512_BF16")


def _case(b, t, cin, cout, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t, cin)).astype(np.float32)
    w = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    return x, w, bias


def _float64(x, w, bias, dilation, pad, out_len):
    """The conv of the bf16-rounded x and w in float64, and the sum |x| |w| of each output."""
    r = lambda a: np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)  # noqa: E731
    x64, w64 = r(x), r(w)
    right = max(0, out_len + dilation * (w.shape[0] - 1) - pad - x.shape[1])
    xp = np.pad(x64, ((0, 0), (pad, right), (0, 0)))
    taps = [xp[:, k * dilation:k * dilation + out_len] for k in range(w.shape[0])]
    y = bias.astype(np.float64) + sum(tp @ wk for tp, wk in zip(taps, w64))
    scale = np.abs(bias) + sum(np.abs(tp) @ np.abs(wk) for tp, wk in zip(taps, w64))
    return y, scale


# (B, T, Cin, Cout, K, dilation): HiFT ResBlock shapes (threaded), row tails (T % 6 != 0),
# several items, channel counts not a multiple of 32 (the scalar conversion tail).
SHAPES = [(1, 2000, 128, 128, 11, 5), (2, 97, 256, 64, 7, 3), (3, 13, 70, 128, 3, 1),
          (1, 5, 2, 64, 1, 1)]


@needs_bf16
@pytest.mark.parametrize("b,t,cin,cout,k,d", SHAPES)
def test_conv_matches_float64_of_the_bf16_operands(b, t, cin, cout, k, d):
    x, w, bias = _case(b, t, cin, cout, k, seed=t + cin)
    pad = d * (k - 1) // 2
    y = np.asarray(jax.jit(lambda *a: kernels.conv_bf16(
        a[0], kernels.pack_bf16_pairs(a[1]), a[2], d, pad, t))(x, w, bias))
    ref, scale = _float64(x, w, bias, d, pad, t)
    assert y.shape == (b, t, cout) and y.dtype == np.float32
    # Products of bf16 values are exact in float32; the chain of K * Cin / 2 pair sums
    # rounds ~2 times per pair: |error| <= (K * Cin + 1) eps sum |x||w|.
    assert np.all(np.abs(y - ref) <= (k * cin + 1) * EPS * scale + 1e-30)


@needs_bf16
def test_packing_rows_and_the_xla_form_agree():
    x, w, bias = _case(3, 300, 128, 128, 7, seed=1)
    pairs = np.asarray(kernels.pack_bf16_pairs(w))
    lo = (pairs & 0xFFFF).astype(np.uint16).view(jnp.bfloat16)
    hi = (pairs >> 16).astype(np.uint16).view(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(lo, np.float32), np.asarray(
        jnp.asarray(w[:, 0::2]).astype(jnp.bfloat16), np.float32))
    np.testing.assert_array_equal(np.asarray(hi, np.float32), np.asarray(
        jnp.asarray(w[:, 1::2]).astype(jnp.bfloat16), np.float32))
    y = np.asarray(kernels.conv_bf16(x, pairs, bias, 3, 9, 300))  # threaded
    one = np.asarray(kernels.conv_bf16(x[2:3, :60], pairs, bias, 3, 9, 60))
    # Causal rows 0..41 only see x[:60] (41 + 18 - 9 < 60): the same bits alone.
    np.testing.assert_array_equal(y[2:3, :42], one[:, :42])
    xla = np.asarray(jax.jit(lambda *a: ops_ref.conv1d_bf16(*a, 3, 9))(x, w, bias))
    ref, scale = _float64(x, w, bias, 3, 9, 300)
    assert np.all(np.abs(xla - ref) <= (7 * 128 + 1) * EPS * scale + 1e-30)
    assert np.all(np.abs(y - xla) <= 2 * (7 * 128 + 1) * EPS * scale + 1e-30)


def test_bad_operands_are_refused():
    x, w, bias = _case(1, 10, 8, 64, 3, seed=2)
    pairs = kernels.pack_bf16_pairs(w)
    with pytest.raises(ValueError, match="even"):
        kernels.pack_bf16_pairs(w[:, :7])
    with pytest.raises(ValueError, match="do not fit"):
        kernels.conv_bf16(x[..., :6], pairs, bias, 1, 1, 10)
    with pytest.raises(ValueError, match="multiple of 64"):
        kernels.conv_bf16(x, pairs[..., :32], bias[:32], 1, 1, 10)
    with pytest.raises(ValueError, match="dilation"):
        kernels.conv_bf16(x, pairs, bias, 0, 1, 10)


SMALL = dataclasses.replace(HiFTConfig(), base_channels=128, f0_cond_channels=64)


@needs_bf16
def test_vocoder_bf16_routes_the_wide_convs_and_stays_close_to_float32():
    v32 = Vocoder.init_random(SMALL, seed=0)
    vb = Vocoder(SMALL, v32.variables, v32.name, conv_dtype="bfloat16")
    assert vb.name == v32.name + "+bf16conv" and v32.conv_dtype == "float32"
    mel = (np.random.default_rng(3).standard_normal((2, 40, 80)) - 5).astype(np.float32)
    a, b = v32(mel, deterministic=True), vb(mel, deterministic=True)
    # bf16 rounding (2^-9 relative) of the operands of ~20 convs: measured 47 dB on the
    # full-size random vocoder; 30 dB leaves room for other seeds and widths.
    snr = 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))
    assert 30 < snr < 120, snr  # < 120: the bf16 path really ran (not bit-equal)
    # conv_pre (128) and the stage-0 ResBlocks and source ResBlock (64 channels) are
    # routed; stage 1 (32 channels) and conv_post (18) are not.
    from secoustic_jax.model.hift import HiFT
    model, m = HiFT(SMALL), jnp.asarray(mel)
    s = jnp.zeros((2, 40 * 256), jnp.float32)

    def decode(v, m, s):
        with hift_bf16.bf16_convs():
            return model.apply(v, m, s, method="decode")
    hlo = jax.jit(decode).lower(v32.variables, m, s).as_text()
    assert hlo.count("@secoustic_conv_bf16(") == 1 + 3 * 2 * 3 + 2 * 3


def test_conv_dtype_is_validated():
    with pytest.raises(ValueError, match="conv_dtype must be one of"):
        Vocoder.init_random(SMALL, seed=0, conv_dtype="float16")
    with pytest.raises(ValueError, match="griffin-lim has no convolutions"):
        load_vocoder("griffin-lim", conv_dtype="bfloat16")


def test_non_cpu_hosts_use_the_xla_bf16_conv(monkeypatch):
    def refuse():
        raise AssertionError("the kernel library was built or loaded")

    monkeypatch.setattr(kernels, "stage_cpu_branch", lambda: False)
    monkeypatch.setattr(kernels, "load", refuse)
    x, w, bias = _case(1, 50, 8, 64, 3, seed=9)
    f = jax.jit(lambda *a: hift_bf16.conv1d_bf16(*a, 2, 2))
    assert "secoustic_conv_bf16" not in f.lower(x, w, bias).as_text()
    want = jax.jit(lambda *a: ops_ref.conv1d_bf16(*a, 2, 2))(x, w, bias)
    np.testing.assert_array_equal(np.asarray(f(x, w, bias)), np.asarray(want))
