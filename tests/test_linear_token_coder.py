"""bench/linear_token_coder.py: the pieces of the linear DPCM baseline against hand values."""

import numpy as np
import pytest

from _bench_helpers import bench_module

ltc = bench_module("linear_token_coder")


def test_lagged_frames_and_bias():
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    lag = ltc.lagged(x, 2)
    assert lag.shape == (4, 7)
    np.testing.assert_array_equal(lag[0], [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(lag[3], [6, 7, 8, 3, 4, 5, 1])


def test_predictor_recovers_an_ar1_process():
    rng = np.random.default_rng(0)
    x = np.zeros((5000, 2))
    for t in range(1, 5000):
        x[t] = 0.5 * x[t - 1] + rng.normal(size=2) + 0.5
    w = ltc.fit_predictor([x], 1)
    # least squares on 5000 unit-noise samples: standard errors ~0.015 (slope), ~0.02 (bias)
    np.testing.assert_allclose(w[:2], 0.5 * np.eye(2), atol=0.05)
    np.testing.assert_allclose(w[2], [0.5, 0.5], atol=0.08)


def test_lloyd_max_levels():
    y = np.array([[-2.0, -0.5, 0.5, 0.7]])
    out = ltc.lloyd_max_3(y, np.ones(4))
    np.testing.assert_allclose(out, [[-1.224, 0.0, 0.0, 1.224]])


def test_water_filling_known_values():
    # lam = (4, 1) at 1 bit: theta = 1 spends 0.5 log2(4) = 1 bit on the first component.
    assert ltc.water_filling(np.array([4.0, 1.0]), 1.0) == pytest.approx(1.0, rel=1e-6)
    # at 3 bits both components are coded: 0.5 log2(4/t) + 0.5 log2(1/t) = 3 -> t = 1/4
    assert ltc.water_filling(np.array([4.0, 1.0]), 3.0) == pytest.approx(0.25, rel=1e-6)


def test_closed_loop_codes_from_its_own_past():
    """With every residual under the threshold the decoder runs on its prediction alone:
    x_hat_t = W [x_hat_{t-1}, 1], whatever x was."""
    x = np.random.default_rng(1).normal(size=(5, 2))
    w = np.array([[0.5, 0.0], [0.0, 0.5], [1.0, 2.0]])
    hat, res = ltc.code(x, w, 1, np.eye(2), np.full(2, 1e6))
    want, prev = [], np.zeros(2)
    for _ in range(5):
        prev = 0.5 * prev + np.array([1.0, 2.0])
        want.append(prev)
    np.testing.assert_allclose(hat, want)
    np.testing.assert_allclose(res, x - np.vstack([[1.0, 2.0], np.array(want[:-1]) * 0.5 + [1.0, 2.0]]))
