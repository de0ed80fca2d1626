"""Host audio I/O: loading, resampling, channel mixing, errors, atomic writes."""

import warnings

import numpy as np
import pytest
import soundfile as sf

from secoustic_jax.audio import io as aio
from secoustic_jax.audio.io import (AudioError, expected_length, load_audio,
                                    prepare_waveform, save_wav)


def _tone(sr, seconds=0.5, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_load_any_rate_to_22k(tmp_path, sr):
    x = _tone(sr)
    p = save_wav(tmp_path / f"t{sr}.wav", x, sr, subtype="FLOAT")
    y, orig = load_audio(p)
    assert orig == sr and y.dtype == np.float32 and y.ndim == 1
    assert len(y) == expected_length(len(x), sr)  # soxr length rule (data.md §1)
    mid = slice(len(y) // 4, 3 * len(y) // 4)
    ref = _tone(22050, seconds=len(y) / 22050)[mid]
    # VHQ resampling of a 440 Hz tone: passband error far below 1e-3 away from the edges.
    np.testing.assert_allclose(y[mid], ref[: len(y[mid])], atol=1e-3)


def test_native_rate_and_stereo_mean(tmp_path):
    left, right = _tone(16000), _tone(16000, f=300.0)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, right], 1), 16000, subtype="FLOAT")
    y, sr = load_audio(p, target_sr=None)
    assert sr == 16000
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)  # float32 mean rounding


def test_pcm16_roundtrip(tmp_path):
    x = _tone(22050)
    p = save_wav(tmp_path / "a" / "b.wav", x, 22050)
    assert sf.info(p).subtype == "PCM_16"
    y, _ = load_audio(p)
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-7)  # 16-bit quantisation step
    assert [q.name for q in p.parent.iterdir()] == ["b.wav"]  # no temp files left


def test_int_input_scaled():
    y = prepare_waveform(np.array([0, 16384, -32768], np.int16), 22050)
    np.testing.assert_array_equal(y, [0.0, 0.5, -1.0])


def test_out_of_range_warns_once_not_clipped(monkeypatch):
    monkeypatch.setattr(aio, "_warned_range", False)
    x = np.array([0.0, 1.5, -2.0] * 200, np.float32)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = prepare_waveform(x, 22050)
        prepare_waveform(x, 22050)
    assert len([m for m in w if "exceeds" in str(m.message)]) == 1
    np.testing.assert_array_equal(y, x)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="bad.wav: unreadable or corrupt"):
        load_audio(bad)
    with pytest.raises(AudioError, match="unreadable audio file"):
        aio.audio_info(bad)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(p)


def test_nan_file(tmp_path):
    p = tmp_path / "nan.wav"
    x = _tone(16000)
    x[100] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: audio contains 1 NaN/Inf sample"):
        load_audio(p)


@pytest.mark.parametrize("wav, sr, msg", [
    (np.zeros((2, 3, 4), np.float32), 16000, "shape"),
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.zeros((0, 2), np.float32), 16000, "empty"),
    (np.array([0.0, np.inf], np.float32), 16000, "NaN/Inf"),
    (np.array(["a", "b"]), 16000, "numeric"),
    (np.zeros(10, np.float32), 0, "sample rate"),
    (np.zeros(10, np.float32), 16000.5, "sample rate"),
])
def test_prepare_errors(wav, sr, msg):
    with pytest.raises(AudioError, match=msg):
        prepare_waveform(wav, sr)


def test_save_errors(tmp_path):
    with pytest.raises(AudioError, match="subtype"):
        save_wav(tmp_path / "x.wav", np.zeros(10), 22050, subtype="MP3")
    with pytest.raises(AudioError, match="NaN"):
        save_wav(tmp_path / "x.wav", np.array([np.nan, 0.0]), 22050)
    with pytest.raises(AudioError, match="non-empty"):
        save_wav(tmp_path / "x.wav", np.zeros(0), 22050)
    assert not list(tmp_path.iterdir())
    assert issubclass(AudioError, ValueError)
