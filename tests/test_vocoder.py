"""The Vocoder API: chunked == whole, input checks, file errors, Griffin-Lim fallback,
save/load, and the output-length rules of both codec variants."""

import shutil

import numpy as np
import pytest

from secoustic_jax.checkpoint.table import CheckpointError
from secoustic_jax.checkpoint.torch_io import load_state_dict, save_state_dict
from secoustic_jax.config.hift import HiFTConfig
from secoustic_jax.config.model import codec_preset
from secoustic_jax.vocoder import (Vocoder, chunk_plan, fit_length, load_vocoder,
                                   output_length_rule)

# Chunks see the same inputs as the whole utterance; only XLA's summation order over
# differently sized arrays changes (measured ~1e-6 on outputs of magnitude ~0.2).
CHUNK_ATOL = 2e-5


@pytest.fixture(scope="module")
def tiny_path(golden_dir):
    return golden_dir / "hift_tiny.safetensors"


@pytest.fixture(scope="module")
def mel(golden_dir):
    return np.load(golden_dir / "hift_tiny_io.npz")["mel_in"][:, :160]


@pytest.fixture(scope="module")
def whole(tiny_path, mel):
    voc = load_vocoder(str(tiny_path))
    return voc, voc(mel, deterministic=True), voc(mel, seed=7)


def test_chunk_plan_covers_every_frame_once():
    for t in (1, 59, 60, 61, 200, 1001):
        plan = chunk_plan(t, 20, 10)
        assert len({w for _, w, _, _ in plan}) == 1  # one window length: one compilation
        emitted = [f for _, _, lo, hi in plan for f in range(lo, hi)]
        assert emitted == list(range(t))
        for start, width, lo, hi in plan:
            assert 0 <= start and start + width <= t
            assert lo - start >= 10 or start == 0
            assert start + width - hi >= 10 or start + width == t


@pytest.mark.parametrize("deterministic", [True, False])
def test_chunked_equals_whole(tiny_path, mel, whole, deterministic):
    voc, det, rnd = whole
    chunked = load_vocoder(str(tiny_path), chunk_frames=37)
    assert len(chunk_plan(mel.shape[1], 37, chunked._context)) > 3
    out = chunked(mel, seed=7, deterministic=deterministic)
    ref = det if deterministic else rnd
    np.testing.assert_allclose(out, ref, rtol=0, atol=CHUNK_ATOL)


def test_randomness_is_keyed(whole, mel):
    voc, det, rnd = whole
    np.testing.assert_array_equal(voc(mel, seed=7), rnd)  # same seed, same audio
    assert np.abs(rnd - det).max() > 1e-3  # noise and phases are really there
    assert np.abs(voc(mel, seed=8) - rnd).max() > 1e-3
    assert np.abs(rnd).max() <= 0.99


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_mel_is_refused(whole, mel, bad):
    voc = whole[0]
    m = mel[0].copy()
    m[17, 3] = bad
    with pytest.raises(ValueError, match="NaN/Inf.*frame 17"):
        voc(m)
    with pytest.raises(ValueError, match="NaN/Inf"):
        Vocoder.griffin_lim()(m)


def test_wrong_mel_shape_is_refused(whole):
    with pytest.raises(ValueError, match=r"\[T, 80\]"):
        whole[0](np.zeros((10, 81), np.float32))
    with pytest.raises(ValueError, match=r"\[T, 80\]"):
        whole[0](np.zeros((80,), np.float32))
    with pytest.raises(ValueError, match="empty"):
        whole[0](np.zeros((0, 80), np.float32))


def test_codec_checkpoint_is_not_a_vocoder(golden_dir):
    with pytest.raises(CheckpointError, match="not a HiFT vocoder.*codec checkpoint"):
        load_vocoder(str(golden_dir / "codec_tiny_86hz.safetensors"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_vocoder_file(tiny_path, tmp_path, suffix):
    sd, _ = load_state_dict(tiny_path)
    full = save_state_dict(tmp_path / f"hift{suffix}", sd)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vocoder(str(cut))
    assert load_vocoder(str(full)).name.startswith("hift:")  # the intact file loads


def test_vocoder_file_with_missing_key(tiny_path, tmp_path):
    sd, _ = load_state_dict(tiny_path)
    del sd["resblocks.4.activations2.1.alpha"]
    path = save_state_dict(tmp_path / "hift.pt", sd)
    with pytest.raises(CheckpointError, match="missing: +resblocks.4.activations2.1.alpha"):
        load_vocoder(str(path))


def test_missing_path_and_unknown_spec(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_vocoder(str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="not a saved vocoder"):
        load_vocoder(str(tmp_path))


def test_save_load_round_trip(whole, mel, tmp_path, tiny_path):
    voc, det, _ = whole
    voc.save(tmp_path / "v")
    back = load_vocoder(str(tmp_path / "v"))
    assert back.name == voc.name and back.config == voc.config
    np.testing.assert_array_equal(back(mel, deterministic=True), det)
    exported, _ = load_state_dict(tmp_path / "v" / "hift.safetensors")
    original, _ = load_state_dict(tiny_path)
    assert set(exported) == set(original)
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k])
    Vocoder.griffin_lim().save(tmp_path / "gl")
    assert load_vocoder(str(tmp_path / "gl")).name == "griffin-lim-32"


def test_name_is_content_hash(tiny_path, tmp_path):
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(tiny_path, copy)
    assert load_vocoder(str(copy)).name == load_vocoder(str(tiny_path)).name
    assert len(load_vocoder(str(copy)).name) == len("hift:") + 12


def test_griffin_lim_fallback_length_and_determinism(mel):
    gl = load_vocoder("griffin-lim")
    assert gl.is_fallback and gl.name == "griffin-lim-32"
    m = mel[0, :24]
    a, b = gl(m, seed=0), gl(m, seed=0)
    assert a.shape == (256 * 24,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(gl(m, seed=1) - a).max() > 1e-4  # the seed is really used
    assert gl(mel[:, :24]).shape == (2, 256 * 24)
    assert np.sqrt(np.mean(a ** 2)) > 1e-3  # audible, not silence


@pytest.mark.parametrize("variant", ["86hz", "21_5hz"])
@pytest.mark.parametrize("n", [385, 220_500, 1024 * 7 + 100, 1024 * 7, 256 * 9 + 255])
def test_output_length_rules(variant, n):
    cfg = codec_preset(variant)
    frames = cfg.decoded_frames(n // 256)
    rule = output_length_rule(n, frames)
    wav = np.ones(256 * frames, np.float32)
    out = fit_length(wav, n)
    assert out.shape == (n,) and rule.vocoder_samples == 256 * frames
    assert rule.vocoder_samples + rule.pad - rule.trim == n and min(rule.pad, rule.trim) == 0
    if variant == "86hz":  # 256 floor(N/256) <= N: always pad, by N mod 256
        assert rule.trim == 0 and rule.pad == n % 256
    assert out[:min(n, wav.size)].all() and not out[wav.size:].any()


def test_output_length_examples_of_the_spec():
    # model.md §3: 10 s -> 220 416 samples (84 short) at 86 Hz, 221 184 (684 long) at 21.5 Hz.
    assert output_length_rule(220_500, codec_preset("86hz").decoded_frames(861)).pad == 84
    assert output_length_rule(220_500, codec_preset("21_5hz").decoded_frames(861)).trim == 684
    # 21.5 Hz pads when T is a multiple of 4 but N is not a multiple of 256.
    assert output_length_rule(1024 * 7 + 100, codec_preset("21_5hz").decoded_frames(28)).pad == 100
    with pytest.raises(ValueError):
        fit_length(np.zeros(4), -1)


@pytest.mark.slow
def test_full_size_hift_chunked_equals_whole():
    """The default (official-size) network with random weights, 2 batch items."""
    mel = np.random.default_rng(0).normal(-6, 2, (2, 300, 80)).astype(np.float32)
    whole = Vocoder.init_random(HiFTConfig(), seed=0)
    chunked = Vocoder.init_random(HiFTConfig(), seed=0, chunk_frames=64)
    ref = whole(mel, seed=3)
    assert ref.shape == (2, 256 * 300)
    np.testing.assert_allclose(chunked(mel, seed=3), ref, rtol=0, atol=CHUNK_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_very_short_inputs(tiny_path, mel, frames):
    """One mel frame is enough: every padding (reflect 8, left reflection 1) still fits."""
    out = load_vocoder(str(tiny_path))(mel[0, :frames], seed=0)
    assert out.shape == (256 * frames,) and np.isfinite(out).all()
