"""The `secoustic` codec commands end to end on the golden weights, and their error exits."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file, save_file

from secoustic_jax.checkpoint.table import read_key_tsv
from secoustic_jax.cli import main

TINY = ["--set", "transformer.num_layers=1", "--set", "transformer.dim_feedforward=256"]


def run(capsys, *argv):
    """Runs the CLI in-process -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ckpt(golden_dir, tmp_path_factory):
    """The golden 86 Hz official-tiny codec imported through `import-torch`."""
    d = tmp_path_factory.mktemp("cli") / "codec"
    assert main(["import-torch", str(golden_dir / "codec_tiny_86hz.safetensors"),
                 "--out", str(d), *TINY]) == 0
    return d


@pytest.fixture(scope="module")
def wavs(golden_dir, tmp_path_factory):
    io = np.load(golden_dir / "codec_tiny_86hz_io.npz")
    d = tmp_path_factory.mktemp("wav")
    for b in range(2):  # float WAV keeps the golden samples exactly
        sf.write(d / f"utt{b}.wav", io["wav_in"][b], 22050, subtype="FLOAT")
    return d, io


def test_encode_decode_roundtrip(ckpt, wavs, tmp_path, capsys):
    d, io = wavs
    code, _, err = run(capsys, "encode", d / "utt0.wav", "--ckpt", ckpt, "--out", tmp_path / "t.npz")
    assert code == 0, err
    z = np.load(tmp_path / "t.npz")
    assert z["tokens"].dtype == np.int32 and z["tokens"].shape == (400,)
    assert str(z["variant"]) == "86hz" and int(z["format_version"]) == 2
    assert int(z["g_bits"]) == 32 and z["paralinguistic"].dtype == np.float32
    assert int(z["num_frames"]) == 400 and int(z["num_samples"]) == 102400
    # mel front-end noise (<= 3e-4) may move a token near a rounding threshold: allow 1 %
    assert np.mean(z["tokens"] == io["tokens"][0]) > 0.99
    np.testing.assert_allclose(z["paralinguistic"], io["paralinguistic"][0], atol=1e-3)
    code, _, err = run(capsys, "decode", tmp_path / "t.npz", "--ckpt", ckpt,
                       "--out", tmp_path / "m.npy")
    assert code == 0, err
    assert np.load(tmp_path / "m.npy").shape == (400, 80)
    code, _, err = run(capsys, "decode", tmp_path / "t.npz", "--ckpt", ckpt,
                       "--out", tmp_path / "w.wav", "--vocoder", "griffin-lim")
    assert code == 0, err
    wav, sr = sf.read(tmp_path / "w.wav")
    assert sr == 22050 and wav.shape == (102400,)  # trimmed / padded to the input length
    code, _, err = run(capsys, "roundtrip", d / "utt0.wav", "--ckpt", ckpt, "--out",
                       tmp_path / "r.wav", "--prompt", d / "utt1.wav")
    assert code == 0, err
    assert sf.read(tmp_path / "r.wav")[0].shape == (102400,)
    code, _, err = run(capsys, "encode", d / "utt0.wav", "--ckpt", ckpt, "--out",
                       tmp_path / "b.npz", "--precision", "exact,matmul=bfloat16")
    assert code == 0, err  # bf16 matmuls: a few tokens may move, most may not
    assert np.mean(np.load(tmp_path / "b.npz")["tokens"] == z["tokens"]) > 0.9


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_export_torch(ckpt, golden_dir, tmp_path, capsys, suffix):
    code, _, err = run(capsys, "export-torch", ckpt, "--out", tmp_path / f"x{suffix}")
    assert code == 0, err
    if suffix == ".safetensors":
        got = load_file(str(tmp_path / "x.safetensors"))
    else:
        import torch
        got = {k: v.numpy() for k, v in torch.load(tmp_path / "x.pt", weights_only=True).items()}
        assert list(got) == [k for k, _, _ in read_key_tsv(golden_dir / "codec_tiny_86hz_keys.tsv")]
    ref = load_file(str(golden_dir / "codec_tiny_86hz.safetensors"))
    assert sorted(got) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])  # bit-exact through the codec directory


def _expect_error(capsys, needle, *argv):
    code, _, err = run(capsys, *argv)
    assert code == 2, (code, err)
    assert needle in err, err


def test_checkpoint_errors_exit_2(golden_dir, tmp_path, capsys):
    src = golden_dir / "codec_tiny_86hz.safetensors"
    out = tmp_path / "o"
    _expect_error(capsys, "wrong variant", "import-torch", src, "--out", out, "--variant",
                  "21_5hz", *TINY)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(src.read_bytes()[:100000])
    _expect_error(capsys, "truncated or corrupt", "import-torch", cut, "--out", out, *TINY)
    sd = load_file(str(src))
    del sd["decoder.model.8.conv.conv.bias"]
    save_file(sd, str(tmp_path / "miss.safetensors"))
    _expect_error(capsys, "missing:     decoder.model.8.conv.conv.bias", "import-torch",
                  tmp_path / "miss.safetensors", "--out", out, *TINY)
    sd = load_file(str(src))
    sd["fsq.project_in.bias"] = np.zeros(9, np.float32)
    save_file(sd, str(tmp_path / "shape.safetensors"))
    _expect_error(capsys, "fsq.project_in.bias: shape [9], expected [8]", "import-torch",
                  tmp_path / "shape.safetensors", "--out", out, *TINY)
    _expect_error(capsys, "no such file", "import-torch", tmp_path / "absent.pt", "--out", out)
    assert not out.exists()


def test_audio_and_npz_errors_exit_2(ckpt, wavs, tmp_path, capsys):
    d, _ = wavs
    nan = np.zeros(4000, np.float32)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 22050, subtype="FLOAT")
    _expect_error(capsys, "NaN/Inf", "encode", tmp_path / "nan.wav", "--ckpt", ckpt,
                  "--out", tmp_path / "a.npz")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 22050)
    _expect_error(capsys, "empty audio", "encode", tmp_path / "empty.wav", "--ckpt", ckpt,
                  "--out", tmp_path / "a.npz")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav file")
    _expect_error(capsys, "unreadable", "encode", tmp_path / "junk.wav", "--ckpt", ckpt,
                  "--out", tmp_path / "a.npz")
    assert run(capsys, "encode", d / "utt1.wav", "--ckpt", ckpt, "--out", tmp_path / "t.npz")[0] == 0
    data = dict(np.load(tmp_path / "t.npz"))
    np.savez(tmp_path / "v3.npz", **{**data, "format_version": np.int64(3)})
    _expect_error(capsys, "format version 3", "decode", tmp_path / "v3.npz", "--ckpt", ckpt,
                  "--out", tmp_path / "m.npy")
    np.savez(tmp_path / "var.npz", **{**data, "variant": np.str_("21_5hz")})
    _expect_error(capsys, "tokens are for the 21_5hz variant", "decode", tmp_path / "var.npz",
                  "--ckpt", ckpt, "--out", tmp_path / "m.npy")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    _expect_error(capsys, "unreadable .npz", "decode", tmp_path / "bad.npz", "--ckpt", ckpt,
                  "--out", tmp_path / "m.npy")
    _expect_error(capsys, "not a codec directory", "encode", d / "utt1.wav", "--ckpt", tmp_path,
                  "--out", tmp_path / "a.npz")


def test_decode_with_the_bf16_vocoder(ckpt, wavs, tmp_path, capsys):
    import dataclasses

    from secoustic_jax import kernels
    from secoustic_jax.config.hift import HiFTConfig
    from secoustic_jax.vocoder import Vocoder

    d, _ = wavs
    assert run(capsys, "encode", d / "utt0.wav", "--ckpt", ckpt, "--out", tmp_path / "t.npz")[0] == 0
    _expect_error(capsys, "griffin-lim has no convolutions", "decode", tmp_path / "t.npz",
                  "--ckpt", ckpt, "--out", tmp_path / "w.wav", "--precision", "exact,vocoder_conv=bfloat16")
    if not kernels.has_bf16_conv():
        pytest.skip("this CPU build has no AVX512_BF16")
    cfg = dataclasses.replace(HiFTConfig(), base_channels=128, f0_cond_channels=64)
    Vocoder.init_random(cfg, seed=0).save(tmp_path / "voc")
    code, _, err = run(capsys, "decode", tmp_path / "t.npz", "--ckpt", ckpt, "--out",
                       tmp_path / "w.wav", "--vocoder", tmp_path / "voc",
                       "--precision", "exact,vocoder_conv=bfloat16")
    assert code == 0, err
    wav, sr = sf.read(tmp_path / "w.wav")
    assert sr == 22050 and wav.shape == (102400,) and np.isfinite(wav).all()


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "secoustic_jax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("import-torch", "export-torch", "encode", "decode", "roundtrip"):
        assert name in out
