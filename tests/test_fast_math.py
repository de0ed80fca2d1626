"""Accuracy of the elementwise fast paths used by the optimised layers (bench/NOTES.md)."""

import jax
import numpy as np

from secoustic_jax.layers.hift_blocks import sin_squared


def test_sin_squared_accuracy():
    rng = np.random.default_rng(0)
    for scale in (0.1, 1.0, 30.0, 1e3, 1e4):
        y = (rng.standard_normal(200_000) * scale).astype(np.float32)
        ref = np.sin(y.astype(np.float64)) ** 2
        got = np.asarray(jax.jit(sin_squared)(y))
        # float32 result in [0, 1]: 2 ulp of 1.0 (the polynomial and the 3-part pi/2 split).
        np.testing.assert_allclose(got, ref, rtol=0, atol=2.5e-7)


def test_sin_squared_special_values():
    y = np.array([0.0, np.pi / 2, -np.pi, 1e-30, np.nan, np.inf, -np.inf], np.float32)
    got = np.asarray(jax.jit(sin_squared)(y))
    np.testing.assert_allclose(got[:4], np.sin(y[:4].astype(np.float64)) ** 2, rtol=0, atol=1e-7)
    assert np.isnan(got[4:]).all()  # like jnp.sin: NaN for NaN and +-inf

