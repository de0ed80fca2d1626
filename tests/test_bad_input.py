"""Audio and token-file input that used to pass silently or wrongly (issue 17, items 6 and
8-14): integer PCM arrays, channels-last arrays, WAVs cut short, impossible lengths in a
token file, non-positive stream chunks, the peak check of resampled audio, a directory as
input, and the file modes of atomic writes."""

import os
import stat
import warnings

import numpy as np
import pytest
import soundfile as sf

from secoustic_jax.api import Codec
from secoustic_jax.atomic import write_text
from secoustic_jax.audio.io import AudioError, load_audio
from secoustic_jax.cli import main
from secoustic_jax.config.model import codec_preset

SR = 22050


@pytest.fixture(scope="module")
def codec():
    return Codec.init(codec_preset("tiny"), seed=0)


@pytest.fixture(scope="module")
def ckpt(codec, tmp_path_factory):
    return codec.save(tmp_path_factory.mktemp("codec") / "tiny")


def _speechlike(n=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.normal(size=n)).astype(np.float32)


def test_integer_pcm_arrays_are_rescaled_exactly_as_files_are(codec, tmp_path):
    pcm = np.round(_speechlike() * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, SR, subtype="PCM_16")
    from_file, _ = load_audio(tmp_path / "a.wav")
    np.testing.assert_array_equal(codec.mel(pcm, SR), codec.mel(from_file, SR))
    # int32 PCM scales by its own range.
    np.testing.assert_array_equal(codec.mel(pcm.astype(np.int32) << 16, SR), codec.mel(pcm, SR))


def test_a_channels_last_array_is_stereo_audio_not_a_batch(codec):
    x = _speechlike()
    stereo = np.stack([x, 0.5 * x], axis=1)  # [N, 2], soundfile's layout
    got = codec.mel(stereo, SR)
    assert got.shape == (SR // 256, 80)
    np.testing.assert_array_equal(got, codec.mel(stereo.mean(axis=1), SR))
    batch = codec.mel(np.stack([x, x]), SR)  # [B, N] with N >= one hop is still a batch
    assert batch.shape == (2, SR // 256, 80)


def _truncated_wav(path):
    sf.write(path, _speechlike(), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_wav_cut_short_warns_with_both_lengths_and_strict_refuses(tmp_path, ckpt, capsys):
    p = tmp_path / "cut.wav"
    _truncated_wav(p)
    with pytest.warns(UserWarning, match=r"declares 22050 frames, the file holds 110\d\d"):
        wav, _ = load_audio(p)
    assert 11000 < wav.shape[0] < 11050
    with pytest.raises(AudioError, match="truncated WAV"):
        load_audio(p, strict=True)
    code = main(["encode", str(p), "--ckpt", str(ckpt), "--out", str(tmp_path / "t.npz"),
                 "--strict"])
    assert code == 2 and "truncated WAV" in capsys.readouterr().err
    assert not (tmp_path / "t.npz").exists()


def _encode(tmp_path, ckpt, wav, rate=SR):
    sf.write(tmp_path / "in.wav", wav, rate, subtype="PCM_16")
    assert main(["encode", str(tmp_path / "in.wav"), "--ckpt", str(ckpt),
                 "--out", str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("key, value, message", [
    ("num_samples", 256_000_000_000, "num_samples=256000000000 does not give"),
    ("num_frames", -5, "num_frames=-5 does not fit"),
    ("num_frames", 1000, "num_frames=1000 does not fit"),
    ("num_frames", np.float64(86.0), "num_frames must be an integer scalar"),
    ("sample_rate", 16000, "sample_rate=16000, the codec runs at 22050"),
])
def test_impossible_lengths_in_a_token_file_are_refused(key, value, message, tmp_path, ckpt,
                                                         capsys):
    payload = _encode(tmp_path, ckpt, _speechlike())
    capsys.readouterr()
    payload[key] = np.asarray(value) if isinstance(value, np.floating) else np.int64(value)
    np.savez(tmp_path / "bad.npz", **payload)
    code = main(["decode", str(tmp_path / "bad.npz"), "--ckpt", str(ckpt),
                 "--out", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "o.npy").exists()


def test_the_peak_check_sees_the_file_as_read_not_resampled(tmp_path, ckpt, capsys):
    import secoustic_jax.audio.io as io

    t = np.arange(44100) / 44100
    square = np.sign(np.sin(2 * np.pi * 440 * t)) * 0.99997  # full scale; resampled peak > 1.1
    io._warned_range = False  # the warning is once per process
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any peak warning fails the test
        payload = _encode(tmp_path, ckpt, square, rate=44100)
    assert payload["num_samples"] == SR and payload["source_sample_rate"] == 44100


@pytest.mark.parametrize("chunk", ["0", "-5", "nan"])
def test_stream_refuses_a_non_positive_chunk(chunk, tmp_path, ckpt, capsys):
    sf.write(tmp_path / "in.wav", _speechlike(), SR)
    code = main(["stream", str(tmp_path / "in.wav"), "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "o.wav"), "--chunk-ms", chunk])
    assert code == 2 and "--chunk-ms must be positive" in capsys.readouterr().err


def test_a_directory_as_input_says_so(tmp_path, ckpt, capsys):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
    code = main(["encode", str(tmp_path), "--ckpt", str(ckpt), "--out", str(tmp_path / "t.npz")])
    assert code == 2 and "is a directory, not an audio file" in capsys.readouterr().err


def test_atomic_writes_respect_the_umask(tmp_path, codec):
    old = os.umask(0o022)
    try:
        f = write_text(tmp_path / "a.txt", "x")
        d = codec.save(tmp_path / "codec")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE(d.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in d.iterdir())


# ---- G precision in the tokens file (issue 16) ---------------------------------------

@pytest.mark.parametrize("bits", [8, 6, 4])
def test_quantised_g_round_trips_through_the_tokens_file(bits, tmp_path, ckpt, codec, capsys):
    from secoustic_jax import tokens_file
    from secoustic_jax.quantizer.g_quant import bits_per_vector, roundtrip_g

    sf.write(tmp_path / "in.wav", _speechlike(), SR, subtype="PCM_16")
    full, q = tmp_path / "full.npz", tmp_path / "q.npz"
    assert main(["encode", str(tmp_path / "in.wav"), "--ckpt", str(ckpt), "--out", str(full)]) == 0
    assert main(["encode", str(tmp_path / "in.wav"), "--ckpt", str(ckpt), "--out", str(q),
                 "--g-bits", str(bits)]) == 0
    a, b = tokens_file.read(full, codec.config), tokens_file.read(q, codec.config)
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    # The file holds exactly what roundtrip_g gives, within half a level of the float G.
    np.testing.assert_array_equal(b["paralinguistic"], roundtrip_g(a["paralinguistic"], bits))
    step = np.abs(a["paralinguistic"]).max() / ((1 << (bits - 1)) - 1)
    assert np.abs(b["paralinguistic"] - a["paralinguistic"]).max() <= 0.5 * step * 1.001
    assert tokens_file.g_side_bits(b) == bits_per_vector(64, bits) == 64 * bits + 16
    with np.load(q) as f:
        assert int(f["g_bits"]) == bits and f["paralinguistic_codes"].dtype == np.int8
        assert "paralinguistic" not in f.files
    assert main(["decode", str(q), "--ckpt", str(ckpt), "--out", str(tmp_path / "m.npy")]) == 0


def test_version_1_token_files_still_decode(tmp_path, ckpt, codec):
    from secoustic_jax import tokens_file

    payload = _encode(tmp_path, ckpt, _speechlike())
    old = {k: v for k, v in payload.items() if k != "g_bits"}
    old["format_version"] = np.int64(1)
    np.savez(tmp_path / "v1.npz", **old)
    got = tokens_file.read(tmp_path / "v1.npz", codec.config)
    np.testing.assert_array_equal(got["paralinguistic"], payload["paralinguistic"])
    assert main(["decode", str(tmp_path / "v1.npz"), "--ckpt", str(ckpt),
                 "--out", str(tmp_path / "m.npy")]) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(g_bits=np.int64(5)), "g_bits=5 is not one of"),
    (lambda d: d.update(g_bits=np.int64(32)), "g_bits=32 but the file also holds"),
    (lambda d: d.update(paralinguistic=np.zeros(64, np.float32)), "also holds ['paralinguistic']"),
    (lambda d: d.update(paralinguistic_codes=np.full(64, 100, np.int8)), "codes must be integers in [-7, 7]"),
    (lambda d: d.update(paralinguistic_codes=np.zeros(32, np.int8)), "paralinguistic_codes must be int8 [64]"),
    (lambda d: d.update(paralinguistic_scale=np.float16(np.nan)), "scale must be finite"),
    (lambda d: d.pop("paralinguistic_scale"), "needs the field 'paralinguistic_scale'"),
])
def test_a_corrupt_or_mismatched_g_field_is_named(edit, message, tmp_path, ckpt, capsys):
    sf.write(tmp_path / "in.wav", _speechlike(), SR, subtype="PCM_16")
    assert main(["encode", str(tmp_path / "in.wav"), "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "q.npz"), "--g-bits", "4"]) == 0
    with np.load(tmp_path / "q.npz") as f:
        data = {k: f[k] for k in f.files}
    edit(data)
    np.savez(tmp_path / "bad.npz", **data)
    capsys.readouterr()
    code = main(["decode", str(tmp_path / "bad.npz"), "--ckpt", str(ckpt),
                 "--out", str(tmp_path / "m.npy")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
