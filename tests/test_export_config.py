"""An export records its CodecConfig outside the official state dict, so any network (here
the tiny preset, which no official variant matches) comes back through `import-torch`
unaided; `--config PRESET|FILE` and `--set` (applied together) cover files without one."""

import json

import jax
import numpy as np
import pytest

from secoustic_jax.api import Codec
from secoustic_jax.checkpoint.torch_io import METADATA_KEY, load_state_dict, save_state_dict
from secoustic_jax.cli import main
from secoustic_jax.config.base import ConfigError, to_dict
from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import load_experiment

CFG = load_experiment("configs/tiny.py").codec  # configs/tiny.py's network (a tiny preset + n_filters)


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    return Codec.init(CFG, seed=5).save(tmp_path_factory.mktemp("c") / "tiny")


def _same(a: Codec, b: Codec):
    assert a.config == b.config
    for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_tiny_export_imports_back_with_no_flags(suffix, codec_dir, tmp_path, capsys):
    out = tmp_path / f"tiny{suffix}"
    assert main(["export-torch", str(codec_dir), "--out", str(out)]) == 0
    assert main(["import-torch", str(out), "--out", str(tmp_path / "back")]) == 0
    err = capsys.readouterr().err
    assert "recorded config" in err and "read " in err and "converted in" in err  # progress
    _same(Codec.load(codec_dir), Codec.load(tmp_path / "back"))
    # The official state dict itself is untouched: the same keys as an export without it.
    sd, _ = load_state_dict(out)
    assert METADATA_KEY not in "".join(sd) and all(isinstance(v, np.ndarray) for v in sd.values())


def test_torch_ignores_the_recorded_config_when_loading_strictly(tmp_path):
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(3, 2)
    path = save_state_dict(tmp_path / "m.pt", {k: v.detach().numpy()
                                               for k, v in layer.state_dict().items()},
                           {"codec_config": "{}"})
    loaded = torch.load(path, weights_only=True)  # the official loader's safe mode
    assert sorted(loaded) == ["bias", "weight"] and METADATA_KEY in loaded._metadata
    torch.nn.Linear(3, 2).load_state_dict(loaded, strict=True)


def test_files_without_a_record_take_config_and_set(codec_dir, tmp_path, capsys):
    codec = Codec.load(codec_dir)
    bare = save_state_dict(tmp_path / "bare.safetensors", codec.torch_state_dict())
    # Without a record the variant is detected (86 Hz geometry) and the widths do not fit.
    assert main(["import-torch", str(bare), "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    # A preset plus overrides applied together (n_filters alone is valid; d_model is not,
    # until seanet.dimension, fsq.dim and the embed size follow it).
    assert main(["import-torch", str(bare), "--out", str(tmp_path / "a"), "--config", "tiny",
                 "--set", f"seanet.n_filters={CFG.seanet.n_filters}",
                 "--set", f"transformer.num_layers={CFG.transformer.num_layers}"]) == 0
    _same(codec, Codec.load(tmp_path / "a"))
    # A JSON codec config: a codec directory's own codec.json.
    assert main(["import-torch", str(bare), "--out", str(tmp_path / "b"), "--config",
                 str(codec_dir / "codec.json")]) == 0
    _same(codec, Codec.load(tmp_path / "b"))
    # A configs/*.py experiment file.
    assert main(["import-torch", str(bare), "--out", str(tmp_path / "c"), "--config",
                 "configs/tiny.py"]) == 0
    _same(codec, Codec.load(tmp_path / "c"))


def test_overrides_are_validated_together_not_one_by_one():
    wide = ["transformer.d_model=96", "seanet.dimension=96", "fsq.dim=96",
            "paralinguistic.embed_dim=96"]
    assert codec_preset("tiny", wide).transformer.d_model == 96
    with pytest.raises(ConfigError, match="must agree"):  # the end state is still checked
        codec_preset("tiny", wide[:1])
    with pytest.raises(ConfigError, match="unknown config field 'nope' in 'fsq.nope'"):
        codec_preset("tiny", ["fsq.nope=1"])


def test_a_corrupt_recorded_config_is_named(codec_dir, tmp_path, capsys):
    codec = Codec.load(codec_dir)
    bad = save_state_dict(tmp_path / "bad.safetensors", codec.torch_state_dict(),
                          {"codec_config": json.dumps(dict(to_dict(CFG), variant=3))[:-9]})
    assert main(["import-torch", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unreadable recorded codec config" in capsys.readouterr().err
