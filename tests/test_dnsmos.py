"""DNSMOS runs offline from the models inside the speechmos wheel, deterministically, and
ranks a clean synthetic utterance above the same utterance with added noise."""

import numpy as np
import pytest

from secoustic_jax.eval.dnsmos import METRICS, SR, dnsmos


def _voiced(seconds=4.0, seed=0):
    """A vowel-like harmonic signal with a syllable envelope at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 130 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
    return (0.2 * x * env / np.abs(x).max() + 1e-4 * rng.normal(size=t.size)).astype(np.float32)


def test_clean_scores_above_noisy_and_repeats_exactly():
    clean = _voiced()
    noisy = clean + 0.05 * np.random.default_rng(1).normal(size=clean.size).astype(np.float32)
    a, b = dnsmos(clean), dnsmos(noisy)
    assert set(METRICS) <= set(a)
    assert a["dnsmos_bak"] > b["dnsmos_bak"] + 0.5  # background noise is what BAK scores
    assert a["dnsmos_ovrl"] > b["dnsmos_ovrl"]
    assert dnsmos(clean) == a  # same input, same numbers (single-thread sessions)


def test_overshoot_is_clipped_and_reported_and_bad_input_named():
    loud = 1.5 * _voiced() / np.abs(_voiced()).max()
    r = dnsmos(loud)
    assert 0 < r["dnsmos_clipped"] < 1 and 1 <= r["dnsmos_ovrl"] <= 5
    with pytest.raises(ValueError, match="non-empty, finite"):
        dnsmos(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="non-empty, finite"):
        dnsmos(np.zeros(0))
