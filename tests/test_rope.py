"""Interleaved (GPT-J) RoPE: identity at 0, float32 parity with the official torch formula."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from secoustic_jax.layers.rope import apply_rope, rope_frequencies


def torch_freqs(d: int, max_period: float = 10000.0) -> torch.Tensor:
    """The official moshi frequencies (torch float32 exp)."""
    return torch.exp(torch.arange(d // 2, dtype=torch.float32) * (-math.log(max_period) * 2 / d))


def torch_rope(x: np.ndarray, positions: np.ndarray, freqs: torch.Tensor) -> np.ndarray:
    """The official moshi `apply_rope` arithmetic (float32), on x [B, T, H, D], positions [T]."""
    xt = torch.from_numpy(x)
    d = xt.shape[-1]
    ts = torch.from_numpy(positions).float().view(1, -1, 1, 1)
    pairs = xt.view(*xt.shape[:-1], d // 2, 2)
    xr, xi = pairs[..., 0].float(), pairs[..., 1].float()
    rotr, roti = torch.cos(freqs * ts), torch.sin(freqs * ts)
    out = torch.stack([xr * rotr - xi * roti, xr * roti + xi * rotr], dim=-1)
    return out.view(xt.shape).numpy()


def numpy_rope64(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Float64 rotation of the float32 angles p * omega (their rounding is part of the definition)."""
    d = x.shape[-1]
    # Correctly rounded float32 omega, computed independently of rope_frequencies.
    omega = np.array([np.float32(math.exp(np.float32(i) * np.float32(-math.log(10000.0) * 2 / d)))
                      for i in range(d // 2)], np.float32)
    angle = (positions.astype(np.float32)[:, None] * omega).astype(np.float64)  # [T, D/2]
    out = np.empty(x.shape, np.float64)
    xr, xi = x[..., 0::2].astype(np.float64), x[..., 1::2].astype(np.float64)
    c, s = np.cos(angle)[None, :, None], np.sin(angle)[None, :, None]
    out[..., 0::2] = xr * c - xi * s
    out[..., 1::2] = xr * s + xi * c
    return out


@pytest.mark.parametrize("d", [16, 64, 128])
def test_frequencies_within_one_ulp_of_official(d):
    ours = np.asarray(rope_frequencies(d))
    ref = torch_freqs(d).numpy()
    # torch's SIMD float32 exp is not correctly rounded: at most 1 ulp apart (d=64: index 3).
    assert np.abs(ours.view(np.int32) - ref.view(np.int32)).max() <= 1
    assert ours[0] == 1.0 and ours.dtype == np.float32


def test_position_zero_is_identity(rng):
    x = rng.standard_normal((2, 1, 8, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(apply_rope(jnp.asarray(x), np.zeros(1, np.int32))), x)


@pytest.mark.parametrize("offset", [0, 249, 51_000])
def test_matches_torch_and_float64(rng, offset):
    x = rng.standard_normal((2, 37, 4, 64)).astype(np.float32)
    pos = np.arange(offset, offset + 37, dtype=np.int32)
    got = np.asarray(apply_rope(jnp.asarray(x), pos))
    # Torch formula fed our omega (the 1-ulp exp difference, times p, would dominate): same
    # float32 angles, so cos/sin/products differ by a few ulps of |x| <= ~5.
    np.testing.assert_allclose(got, torch_rope(x, pos, torch.from_numpy(rope_frequencies(64))),
                               atol=2e-6, rtol=0)
    # Against float64 trig of the same float32 angles: float32 trig + 2 products.
    np.testing.assert_allclose(got, numpy_rope64(x, pos), atol=3e-6, rtol=0)


def test_interleaved_not_rotate_half(rng):
    x = rng.standard_normal((1, 1, 1, 8)).astype(np.float32)
    got = np.asarray(apply_rope(jnp.asarray(x), np.array([3])))
    # Pair (x0, x1) rotated by angle 3 * omega_0 = 3 rad: check it directly.
    c, s = math.cos(3.0), math.sin(3.0)
    np.testing.assert_allclose(got[0, 0, 0, :2], [x[0, 0, 0, 0] * c - x[0, 0, 0, 1] * s,
                                                  x[0, 0, 0, 0] * s + x[0, 0, 0, 1] * c],
                               atol=1e-6)  # float32 trig
    # Norm of every pair is preserved.
    pairs_in = np.hypot(x[..., 0::2], x[..., 1::2])
    np.testing.assert_allclose(np.hypot(got[..., 0::2], got[..., 1::2]), pairs_in, rtol=1e-6)


def test_per_batch_positions_and_dtype(rng):
    x = rng.standard_normal((2, 5, 2, 16)).astype(np.float32)
    pos = np.stack([np.arange(5), np.arange(100, 105)]).astype(np.int32)
    got = np.asarray(apply_rope(jnp.asarray(x), pos))
    for b in range(2):
        np.testing.assert_array_equal(got[b:b + 1], np.asarray(apply_rope(jnp.asarray(x[b:b + 1]), pos[b])))
    y = apply_rope(jnp.asarray(x, jnp.bfloat16), pos)
    assert y.dtype == jnp.bfloat16


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="positions"):
        apply_rope(jnp.zeros((1, 4, 2, 8)), np.arange(5))
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="B, T, H, Dh"):
        apply_rope(jnp.zeros((4, 2, 8)), np.arange(4))
