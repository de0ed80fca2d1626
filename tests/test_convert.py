"""Strict codec import/export through the real file path: variants, errors, bit-exact round trips."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from secoustic_jax.checkpoint.codec_names import codec_table
from secoustic_jax.checkpoint.convert import (codec_state_dict, detect_variant, export_codec,
                                              import_codec, import_codec_state_dict)
from secoustic_jax.checkpoint.table import TRANSFORMS, CheckpointError, read_key_tsv
from secoustic_jax.config import codec_preset, golden_tiny

torch = pytest.importorskip("torch")


def golden_state_dict(golden_dir, variant: str) -> dict:
    """The official-tiny state dict; 21.5 Hz = 86 Hz file with the 4 resample tensors replaced."""
    sd = load_file(str(golden_dir / "codec_tiny_86hz.safetensors"))
    if variant == "21_5hz":
        sd.update(load_file(str(golden_dir / "codec_tiny_21_5hz_resample.safetensors")))
    return sd


def _in_tsv_order(sd, golden_dir, variant):
    return {k: sd[k] for k, _, _ in read_key_tsv(golden_dir / f"codec_tiny_{variant}_keys.tsv")}


def _assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-exact: pure layout moves


@pytest.fixture(scope="module")
def golden_files(golden_dir, tmp_path_factory):
    """Golden 86 Hz and 21.5 Hz checkpoints as .safetensors and .pt files."""
    d = tmp_path_factory.mktemp("golden_ckpt")
    out = {}
    for variant in ("86hz", "21_5hz"):
        sd = _in_tsv_order(golden_state_dict(golden_dir, variant), golden_dir, variant)
        save_file(sd, str(d / f"{variant}.safetensors"))
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, str(d / f"{variant}.pt"))
        out[variant] = (sd, d / f"{variant}.safetensors", d / f"{variant}.pt")
    return out


@pytest.mark.parametrize("variant", ["86hz", "21_5hz"])
@pytest.mark.parametrize("fmt", [1, 2])
def test_import_export_import_is_bit_exact(variant, fmt, golden_files, tmp_path):
    sd, *paths = golden_files[variant]
    cfg_req = golden_tiny(variant)
    cfg, variables, _ = import_codec(paths[fmt - 1], config=cfg_req)
    assert cfg == cfg_req
    assert variables["batch_stats"]["paralinguistic_encoder"]["batchnorm_1"][
        "num_batches_tracked"].dtype == np.int32
    _assert_same(codec_state_dict(variables, cfg), sd)
    for suffix in (".safetensors", ".pt"):
        out = export_codec(variables, cfg, tmp_path / f"out{suffix}")
        cfg2, variables2, _ = import_codec(out, config=cfg)
        _assert_same(codec_state_dict(variables2, cfg2), sd)


@pytest.mark.parametrize("variant", ["86hz", "21_5hz"])
def test_exported_pt_has_the_tsv_keys_in_order(variant, golden_files, golden_dir, tmp_path):
    sd, st_path, _ = golden_files[variant]
    cfg, variables, _ = import_codec(st_path, config=golden_tiny(variant))
    out = export_codec(variables, cfg, tmp_path / "x.pt")
    loaded = torch.load(str(out), weights_only=True)  # what a strict torch load_state_dict sees
    expected = read_key_tsv(golden_dir / f"codec_tiny_{variant}_keys.tsv")
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in loaded.items()]
    assert got == expected
    st = load_file(str(export_codec(variables, cfg, tmp_path / "x.safetensors")))
    assert sorted(st) == sorted(k for k, _, _ in expected)
    assert st["paralinguistic_encoder.batchnorm_6.num_batches_tracked"].dtype == np.int64


def test_variant_is_detected_from_resampling_kernels(golden_dir):
    assert detect_variant(golden_state_dict(golden_dir, "86hz")) == "86hz"
    assert detect_variant(golden_state_dict(golden_dir, "21_5hz")) == "21_5hz"


@pytest.mark.parametrize("have,want", [("86hz", "21_5hz"), ("21_5hz", "86hz")])
def test_wrong_variant_is_refused(have, want, golden_files):
    _, path, _ = golden_files[have]
    with pytest.raises(CheckpointError, match=f"wrong variant: the file holds the {have} variant"):
        import_codec(path, config=golden_tiny(want))
    with pytest.raises(CheckpointError, match="wrong variant"):
        import_codec(path, variant=want)


def test_detected_full_preset_does_not_fit_tiny_weights(golden_files):
    # No config: the detected 86hz preset has 8 layers and FFN 2048 -> strict errors, not silence.
    with pytest.raises(CheckpointError) as e:
        import_codec(golden_files["86hz"][1])
    msg = str(e.value)
    assert "missing:     encoder_transformer.transformer.layers.1.norm1.weight" in msg
    assert "linear1.weight: shape [256, 512], expected [2048, 512]" in msg


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file_is_refused(suffix, golden_files, tmp_path):
    src = golden_files["86hz"][1 if suffix == ".safetensors" else 2]
    blob = src.read_bytes()
    bad = tmp_path / f"cut{suffix}"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        import_codec(bad, config=golden_tiny("86hz"))
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="file is empty"):
        import_codec(empty, config=golden_tiny("86hz"))
    with pytest.raises(CheckpointError, match="no such file"):
        import_codec(tmp_path / f"absent{suffix}")


def _mutated(sd, fn):
    sd = dict(sd)
    fn(sd)
    return sd


def test_missing_misshaped_unexpected_and_nonfinite_keys_are_named(golden_files):
    sd = golden_files["86hz"][0]
    cfg = golden_tiny("86hz")
    key = "fsq.project_out.bias"
    with pytest.raises(CheckpointError, match=f"missing:     {key}"):
        import_codec_state_dict(_mutated(sd, lambda d: d.pop(key)), cfg)
    with pytest.raises(CheckpointError, match=rf"{key}: shape \[511\], expected \[512\]"):
        import_codec_state_dict(_mutated(sd, lambda d: d.update({key: d[key][:511]})), cfg)
    with pytest.raises(CheckpointError, match="unexpected:  phoneme_encoder.w"):
        import_codec_state_dict(_mutated(
            sd, lambda d: d.update({"phoneme_encoder.w": np.zeros(1, np.float32)})), cfg)
    extra = _mutated(sd, lambda d: d.update({"phoneme_encoder.w": np.zeros(1, np.float32)}))
    import_codec_state_dict(extra, cfg, ignore_prefixes=("phoneme_encoder.",))  # explicit opt-out
    nan = _mutated(sd, lambda d: d.update({key: np.full(512, np.nan, np.float32)}))
    with pytest.raises(CheckpointError, match=f"NaN/Inf values: {key}"):
        import_codec_state_dict(nan, cfg)
    wrong_dtype = _mutated(sd, lambda d: d.update({key: d[key].astype(np.float16)}))
    with pytest.raises(CheckpointError, match=f"{key}: dtype float16, expected float32"):
        import_codec_state_dict(wrong_dtype, cfg)


def test_wrapped_and_prefixed_pt_is_unwrapped(golden_files, tmp_path):
    sd = golden_files["86hz"][0]
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}}, str(path))
    cfg, variables, notes = import_codec(path, config=golden_tiny("86hz"))
    assert any("'model'" in n for n in notes) and any("module." in n for n in notes)
    _assert_same(codec_state_dict(variables, cfg), sd)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["86hz", "21_5hz"])
def test_full_preset_export_matches_official_tsv(variant, reference_dir):
    """Zero-valued full-size variables exported in memory: exact keys, order, shapes, dtypes."""
    cfg = codec_preset(variant)
    sd = {e.torch_key: np.zeros(e.torch_shape, e.dtype) for e in codec_table(cfg)}
    variables = import_codec_state_dict(sd, cfg)
    out = codec_state_dict(variables, cfg)
    got = [(k, v.shape, str(v.dtype)) for k, v in out.items()]
    assert got == read_key_tsv(reference_dir / f"official_state_dict_{variant}.tsv")


def test_transforms_used_by_the_table_are_bijections(rng):
    for e in codec_table(golden_tiny("21_5hz")):
        t = TRANSFORMS[e.transform]
        a = (np.asarray(3, np.int64) if e.dtype == "int64"
             else rng.standard_normal(e.torch_shape).astype(np.float32))
        np.testing.assert_array_equal(t.to_torch(t.to_flax(a), e.torch_shape), a)
