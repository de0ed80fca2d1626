"""Log-mel front end (model.md §2) against the official goldens and a float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.audio.mel import (hann_window, log_mel, log_mel_numpy, mel_basis,
                                     min_samples, num_frames)
from secoustic_jax.config.model import MelConfig


@pytest.fixture(scope="module")
def front(golden_dir):
    return np.load(golden_dir / "mel_frontend.npz")


def test_constants_match_golden(front):
    # The basis comes from the same librosa version: bit-identical.
    np.testing.assert_array_equal(mel_basis(), front["mel_basis"])
    # torch builds the window in float32 with its own cos; 2e-7 is float32 rounding.
    np.testing.assert_allclose(hann_window(), front["hann_window"], atol=2e-7)
    assert mel_basis().shape == (80, 513)


@pytest.mark.parametrize("name", ["short", "odd"])
def test_golden_vectors(front, name):
    wav, ref = front[f"wav_{name}"], front[f"mel_{name}"]
    out = np.asarray(log_mel(wav))
    assert out.shape == ref.shape == (len(wav) // 256, 80)
    # golden README §3: float32 front end vs the official float32 one, suggested 2e-4.
    np.testing.assert_allclose(out, ref, atol=2e-4, rtol=0)


@pytest.mark.parametrize("variant", ["86hz", "21_5hz"])
def test_codec_golden_wav_to_mel(golden_dir, variant):
    io = np.load(golden_dir / f"codec_tiny_{variant}_io.npz")
    out = np.asarray(log_mel(io["wav_in"]))  # batched call; the official one ran per row
    assert out.shape == io["mel_in"].shape
    # golden README: low-energy bins of speech make float32 FFT noise visible; atol 0.004.
    np.testing.assert_allclose(out, io["mel_in"], atol=4e-3, rtol=0)


def test_against_float64_reference_and_jit(rng):
    wav = (0.3 * rng.standard_normal((3, 5000))).astype(np.float32)
    ref = log_mel_numpy(wav)
    out = np.asarray(jax.jit(log_mel)(jnp.asarray(wav)))
    assert out.shape == (3, num_frames(5000), 80)
    # float32 FFT + matmul vs float64: ~1e-6 typical, 1e-4 bound for low-energy bins.
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    assert np.median(np.abs(out - ref)) < 1e-5  # model.md §2: ~1e-5 typical


def test_batch_equals_rows(rng):
    wav = rng.uniform(-1, 1, (2, 2048)).astype(np.float32)
    batched = np.asarray(log_mel(wav))
    for b in range(2):
        # identical ops per row; only XLA batching order differs (float32 rounding).
        np.testing.assert_allclose(batched[b], np.asarray(log_mel(wav[b])), atol=1e-5)


def test_lengths():
    cfg = MelConfig()
    assert min_samples(cfg) == 385
    assert log_mel(np.zeros(385, np.float32)).shape == (1, 80)
    assert log_mel(np.zeros(220500, np.float32)).shape == (861, 80)  # model.md §2 fact
    # silence hits the floor: ln(max(mel(sqrt(1e-9)), 1e-5)) is finite.
    assert np.isfinite(np.asarray(log_mel(np.zeros(1024, np.float32)))).all()


@pytest.mark.parametrize("bad, msg", [
    (np.zeros(384, np.float32), "at least 385"),
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((0, 1000), np.float32), "empty"),
    (np.zeros((1, 2, 1000), np.float32), "shape"),
    (np.array([0.0] * 500 + [np.nan] + [0.0] * 500, np.float32), "NaN/Inf"),
    (np.array([0.0] * 500 + [np.inf] + [0.0] * 500, np.float32), "NaN/Inf"),
    (np.zeros(1000, np.int16), "floating"),
])
def test_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        log_mel(bad)
