"""Features on the device (pipeline.features="waveform"): the host cuts int16 waveform
windows, the mel is computed on the device, and it equals the host mel crops."""

import dataclasses

import jax
import numpy as np
import pytest
from _data_helpers import tiny_corpus

from secoustic_jax.audio.mel import frame_window, log_mel, log_mel_numpy, log_mel_windows
from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.config.model import MelConfig
from secoustic_jax.config.train import MeshConfig
from secoustic_jax.data import packed_format as F
from secoustic_jax.data.crops import LOG_FLOOR
from secoustic_jax.data.device_mel import PCM_SCALE, batch_log_mel, host_mel
from secoustic_jax.data.pack import PackOptions, pack_dataset
from secoustic_jax.data.packed_source import (PackedReader, make_packed_iterator,
                                              make_packed_train_iterator, packed_entries)
from secoustic_jax.data.phones import PhoneInventory
from secoustic_jax.data.pipeline import make_train_iterator
from secoustic_jax.training import sharding as shd

MEL = MelConfig()
CFG = PipelineConfig(segment_frames=256, prompt_frames=300, max_phones=96, num_threads=1,
                     prefetch_buffer=2)
WAVE = dataclasses.replace(CFG, features="waveform")
# The host packs log_mel_numpy (float64) of the float waveform; the device runs the float32
# JAX front end on its int16 rounding: float32 FFT noise in low-energy bins (golden README:
# 0.004) dominates; measured max 8.4e-4 on this corpus (the test prints it).
TOL = 4e-3
MEAN_TOL = 2e-4  # ... while the mean |error| stays at the float32 level


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed_wave")
    pack_dataset(corpus, out, ("train", "valid"), log=lambda *a: None, opts=PackOptions(
        mel_dtype="float32", waveform=True, records_per_shard=5, workers=1))
    return out


@pytest.mark.parametrize("start,frames", [(0, 16), (37, 64), (120, 40), (0, 200)])
def test_windows_give_the_frames_of_the_whole_utterance(start, frames):
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(128 * 256 + 77)).astype(np.float32)  # T = 128
    full = np.asarray(log_mel(wav, MEL))
    win = frame_window(wav, start, frames, MEL)
    assert win.shape == (frames * 256 + 768,) and win.dtype == wav.dtype
    got = np.asarray(log_mel_windows(win[None], MEL))[0]
    n = max(0, min(frames, full.shape[0] - start))  # frames past T are zeros, masked later
    # Same float32 ops on the same samples; only XLA's fusion order may differ.
    np.testing.assert_allclose(got[:n], full[start:start + n], atol=1e-5, rtol=0)
    if n < frames:  # past the padded signal the window is zero
        assert not win[(full.shape[0] - start) * 256 + 768 + 384:].any()


def test_window_shape_is_checked():
    with pytest.raises(ValueError, match=r"expected \[B, F \* 256 \+ 768\] windows"):
        log_mel_windows(np.zeros((1, 1000), np.float32), MEL)


def test_waveform_batches_equal_mel_batches(packed):
    """Same seed, same crops and labels; the device mel equals the host mel crops."""
    for prompt in ("same", "other"):
        a = make_packed_train_iterator(packed, "train", dataclasses.replace(
            CFG, prompt_source=prompt), seed=3, global_batch_size=4)
        b = make_packed_train_iterator(packed, "train", dataclasses.replace(
            WAVE, prompt_source=prompt), seed=3, global_batch_size=4)
        worst = []
        for _ in range(3):
            ref, wave = next(a), next(b)
            assert set(wave) == set(ref) - {"mel", "prompt_mel"} | {"wav", "prompt_wav"}
            assert wave["wav"].dtype == np.int16 and wave["wav"].shape == (4, 256 * 256 + 768)
            for k in set(ref) - {"mel", "prompt_mel"}:
                np.testing.assert_array_equal(wave[k], ref[k], err_msg=k)
            got = batch_log_mel(wave, MEL)
            assert "wav" not in got and "prompt_wav" not in got
            for k in ("mel", "prompt_mel"):
                err = np.abs(np.asarray(got[k]) - ref[k])
                worst.append(float(err.max()))
                assert err.max() < TOL and err.mean() < MEAN_TOL, (k, err.max(), err.mean())
            # padding frames carry the log floor exactly, as the host crops
            pad = np.arange(300)[None, :] >= ref["prompt_lengths"][:, None]
            assert (np.asarray(got["prompt_mel"])[pad] == np.float32(LOG_FLOOR)).all()
        print(f"prompt {prompt}: max |device - host mel| {max(worst):.2e}")


def test_device_mel_is_the_front_end_of_the_int16_waveform(packed):
    """Against the float64 front end of the same int16 utterance, sliced at the crop: the
    difference left is the float32 front end's alone."""
    index = F.load_index(packed)
    info = index["splits"]["train"]
    entries, _, _ = packed_entries(info, CFG)
    read = PackedReader(packed, info, 256, features="waveform")
    b = next(make_packed_train_iterator(packed, "train", WAVE, seed=0, global_batch_size=2))
    got = np.asarray(batch_log_mel(b, MEL)["mel"])
    for i in range(2):
        wav = read(entries[int(b["utt_index"][i])])[0][0]
        ref = log_mel_numpy(wav.astype(np.float64) / PCM_SCALE, MEL)
        s = int(b["crop_start"][i])
        # golden README: float32 FFT noise in low-energy speech bins reaches 0.004.
        np.testing.assert_allclose(got[i], ref[s:s + 256], atol=4e-3, rtol=0)


def test_eval_and_prompt_padding_and_errors(packed, corpus, tmp_path):
    it = make_packed_iterator(packed, "valid", WAVE, batch_size=2)
    ev = [host_mel(b, MEL) for b in it]
    ref = list(make_packed_iterator(packed, "valid", CFG, batch_size=2))
    assert len(ev) == len(ref)
    for a, r in zip(ev, ref):
        assert np.abs(a["mel"] - r["mel"]).max() < TOL
        np.testing.assert_array_equal(a["valid"], r["valid"])
    with pytest.raises(ConfigError, match="pipeline.features"):
        dataclasses.replace(CFG, features="raw").validate()
    with pytest.raises(ValueError, match="needs a packed source with waveforms"):
        make_train_iterator([corpus / "train.jsonl"], PhoneInventory.load(corpus), WAVE,
                            seed=0, global_batch_size=2)
    no_wave = tmp_path / "mel_only"
    pack_dataset(corpus, no_wave, ("train",), log=lambda *a: None,
                 opts=PackOptions(records_per_shard=5, workers=1))
    with pytest.raises(F.PackedError, match="packed without --waveform"):
        make_packed_train_iterator(no_wave, "train", WAVE, seed=0, global_batch_size=2)
    b = next(make_packed_train_iterator(packed, "train", WAVE, seed=0, global_batch_size=2))
    mesh = shd.make_mesh(MeshConfig(data=1, fsdp=1), jax.devices()[:1])
    with pytest.raises(ValueError, match="needs the model's mel config"):
        shd.global_batch(mesh, b)
    g = shd.global_batch(mesh, b, MEL)
    assert g["mel"].shape == (2, 256, 80) and "wav" not in g
    assert g["mel"].sharding.spec == shd.batch_sharding(mesh).spec


def test_training_losses_manifest_packed_and_waveform(packed, corpus):
    """Stand-in codec, both stages, same seed: the manifest source and the packed float32
    mel give bitwise the same losses; packed waveforms with the mel on the device give
    them within the front end's float32 difference."""
    from train_standin import standin_train, tiny_experiment

    sources = {"manifest": {"data.kind": "manifest", "data.root": str(corpus)},
               "packed": {"data.kind": "packed", "data.packed": str(packed)},
               "waveform": {"data.kind": "packed", "data.packed": str(packed),
                            "data.pipeline.features": "waveform"}}
    runs = {}
    for name, over in sources.items():
        cfg = tiny_experiment({**over, "data.pipeline.max_phones": 96,
                               "data.pipeline.feature_cache": None, "log.eval_batches": 1,
                               "log.audio_examples": 1}, steps=(3, 3), batch=2, frames=128)
        runs[name] = standin_train(cfg, f"{packed}_run_{name}")
    for stage in ("acoustic", "semantic"):
        a, b, c = (runs[k]["stages"][stage]["last_window"] for k in sources)
        assert b["loss/total"] == a["loss/total"], stage  # bit-identical batches
        # Inputs differ by <= 4e-3 (the front end's float32 noise): losses agree to ~1e-3.
        assert c["loss/total"] == pytest.approx(a["loss/total"], rel=1e-3, abs=1e-4), stage
