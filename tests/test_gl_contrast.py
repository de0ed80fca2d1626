"""bench/gl_contrast.py: the contrast scale keeps each bin's time mean, and the summary
averages exactly the scored cells (and refuses a missing one)."""

import numpy as np
import pytest

from _bench_helpers import bench_module

glc = bench_module("gl_contrast")


def test_contrast_scales_the_deviation_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(50, 80)).astype(np.float32) - 5
    np.testing.assert_array_equal(glc.contrast(mel, 1.0), mel)
    out = glc.contrast(mel, 1.3)
    # float32 rounding of values near -5
    np.testing.assert_allclose(out.mean(axis=0), mel.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.3 * mel.std(axis=0), rtol=1e-5)


def test_summarise_means_per_path_and_scale():
    scored = {(p, s, i): {"pesq_wb": 1.0 + i + s, "stoi": 0.5}
              for p in glc.PATHS for s in (1.0, 1.15) for i in range(3)}
    out = glc.summarise(scored, 3)
    assert set(out) == set(glc.PATHS) and set(out["token"]) == {"1", "1.15"}
    assert out["token"]["1.15"]["pesq_wb"] == pytest.approx(2.0 + 1.15)
    del scored[("token", 1.0, 2)]
    with pytest.raises(RuntimeError, match="expected 3"):
        glc.summarise(scored, 3)
