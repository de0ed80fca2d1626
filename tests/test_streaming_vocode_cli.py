"""Chunked streaming vocoder == whole-utterance vocoder; the `secoustic stream` command."""

import numpy as np
import pytest

from secoustic_jax.config.hift import hift_tiny
from secoustic_jax.streaming.vocode import StreamingVocoder, added_latency_ms
from secoustic_jax.vocoder import Vocoder

# float32: windowed vs whole-utterance convolutions differ only in summation blocking;
# the vocoder's own chunked path is checked to the same order (wav max abs ~0.2-1).
WAV_ATOL = 2e-4


@pytest.fixture(scope="module")
def vocoder():
    voc = Vocoder.init_random(hift_tiny(), seed=0)
    # golden README §2: scale the f0 head so some frames are voiced (source not silent)
    voc.variables["params"]["f0_predictor"]["classifier"]["kernel"] = (
        voc.variables["params"]["f0_predictor"]["classifier"]["kernel"] * 3000.0)
    return voc


@pytest.mark.parametrize("deterministic", [True, False])
def test_streamed_waveform_equals_offline(vocoder, golden_dir, deterministic):
    mel = np.load(golden_dir / "hift_tiny_io.npz")["mel_in"][:1, :150]
    ref = vocoder(mel, seed=3, deterministic=deterministic)
    sv = StreamingVocoder(vocoder, 1, block_frames=8, seed=3, deterministic=deterministic)
    rng = np.random.default_rng(0)
    parts, pos = [], 0
    while pos < mel.shape[1]:
        n = int(rng.integers(1, 7))
        parts.append(sv.push(mel[:, pos:pos + n]))
        pos += n
    parts.append(sv.flush())
    got = np.concatenate(parts, axis=1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=WAV_ATOL, rtol=0)
    lat = added_latency_ms(vocoder, 8)
    assert lat["steady_ms"] < lat["first_ms"]


@pytest.mark.slow
def test_stream_command(tmp_path, golden_dir, capsys):
    from _streaming_helpers import diverse_tiny
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.io import save_wav, load_audio
    from secoustic_jax.cli import main
    cfg, v, _ = diverse_tiny("tiny_21_5hz")
    Codec(cfg, v).save(tmp_path / "ckpt")
    wav = np.load(golden_dir / "codec_tiny_86hz_io.npz")["wav_in"][0, :30000]
    save_wav(tmp_path / "in.wav", wav, 22050)
    rc = main(["stream", str(tmp_path / "in.wav"), "--ckpt", str(tmp_path / "ckpt"),
               "--out", str(tmp_path / "out.wav"), "--chunk-ms", "46"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "first packet" in text and "p99" in text
    out, sr = load_audio(tmp_path / "out.wav")
    assert sr == 22050 and len(out) == len(wav)


def test_stream_command_narrow_weights_match_float32_audio(tmp_path, golden_dir, capsys):
    """bf16 weights and KV, and int8 weights (--precision) stream through the kernels; on the tiny
    codec (LayerScale 0.01 branches) the Griffin-Lim audio stays close to float32's."""
    from _streaming_helpers import diverse_tiny
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.io import save_wav, load_audio
    from secoustic_jax.cli import main
    cfg, v, _ = diverse_tiny("tiny")
    Codec(cfg, v).save(tmp_path / "ckpt")
    wav = np.load(golden_dir / "codec_tiny_86hz_io.npz")["wav_in"][0, :12000]
    save_wav(tmp_path / "in.wav", wav, 22050)
    outs = []
    for extra in ([], ["--precision", "exact,stream_weights=bfloat16,kv=bfloat16"],
                  ["--precision", "exact,stream_weights=int8"],
                  ["--precision", "exact,stream_weights=int8,stream_stacks=decoder"]):
        out = tmp_path / f"out{len(outs)}.wav"
        assert main(["stream", str(tmp_path / "in.wav"), "--ckpt", str(tmp_path / "ckpt"),
                     "--out", str(out), *extra]) == 0
        outs.append(load_audio(out)[0])
    text = capsys.readouterr().out
    assert "float32 weights, float32 KV" in text and "bfloat16 weights, bfloat16 KV" in text
    assert "int8 weights, float32 KV" in text
    assert "int8 weights (decoder stacks only), float32 KV" in text
    assert all(len(o) == len(wav) for o in outs)
    # Mels ~1e-5 apart; Griffin-Lim's 32 phase iterations and 16-bit output amplify that
    # to isolated samples (max ~3e-2) but not to the waveform as a whole.
    # int8: each weight is off by up to max|w[:, n]| / 254, ~10x the bf16 rounding, so its
    # mels sit ~10x further from float32 (3.5e-2 measured): a broken kernel reads ~1.
    for other, tol in zip(outs[1:], (0.02, 0.07, 0.07)):
        rel = np.sqrt(np.mean((outs[0] - other) ** 2) / np.mean(outs[0] ** 2))
        assert rel < tol, rel
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the policy's own message, not argparse's generic one
        main(["stream", str(tmp_path / "in.wav"), "--ckpt", str(tmp_path / "ckpt"),
              "--out", str(tmp_path / "x.wav"), "--precision", "exact,stream_stacks=decoder"])
    assert "needs stream_weights bfloat16 or int8" in capsys.readouterr().err
