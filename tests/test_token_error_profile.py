"""bench/token_error_profile.py: every split of the error is exact and lands where it should."""

import numpy as np
import pytest

from _bench_helpers import bench_module

tep = bench_module("token_error_profile")
RTOL = 1e-9  # float64 sums of a few thousand squares


def test_dct_is_orthonormal():
    d = tep.dct_matrix(80)
    np.testing.assert_allclose(d @ d.T, np.eye(80), atol=1e-12)  # float64 rounding only


@pytest.mark.parametrize("split", ["quefrency", "bins", "loudness", "temporal"])
def test_every_split_sums_to_the_total(split):
    rng = np.random.default_rng(0)
    parts = [tep.profile(rng.normal(size=(t, 80)), rng.normal(size=(t, 80)), 86.13)
             for t in (37, 64)]
    for p in parts:
        assert sum(p[split].values()) == pytest.approx(p["total"], rel=RTOL)
    s = tep.summarise(parts)
    assert sum(s[split].values()) == pytest.approx(1.0, rel=RTOL)
    assert s["mse"] == pytest.approx(sum(p["total"] for p in parts) / ((37 + 64) * 80), rel=RTOL)


def test_parts_land_where_the_error_is():
    t = 256
    mel = np.zeros((t, 80))
    mel[: t // 3] = -10.0  # a quiet first third
    flat = np.ones((t, 80))  # level offset: quefrency 0, modulation 0 Hz
    p = tep.profile(flat, mel, 86.13)
    assert p["quefrency"]["0-1"] == pytest.approx(p["total"], rel=RTOL)
    assert p["temporal"]["below_4hz"] == pytest.approx(p["total"], rel=RTOL)
    # the top DCT basis vector (bin-to-bin) sign-flipped every frame (43 Hz)
    alternating = tep.dct_matrix(80)[79][None] * (-1.0) ** np.arange(t)[:, None]
    p = tep.profile(alternating, mel, 86.13)
    assert p["quefrency"]["20-80"] == pytest.approx(p["total"], rel=RTOL)
    assert p["temporal"]["above_16hz"] == pytest.approx(p["total"], rel=RTOL)
    low_bins = np.zeros((t, 80))
    low_bins[:t // 3, :10] = 1.0
    p = tep.profile(low_bins, mel, 86.13)
    assert p["bins"]["0-20"] == pytest.approx(p["total"], rel=RTOL)
    assert p["loudness"]["quiet_third"] == pytest.approx(p["total"], rel=RTOL)
