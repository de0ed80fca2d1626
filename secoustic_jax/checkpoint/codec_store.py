"""This project's own codec directory format (`Codec.save` / `Codec.load`).

A directory holds:
- `codec.json`: {"format": "secoustic-codec", "format_version": 1, "config": {...}};
- `variables.safetensors`: every leaf of {"params", "batch_stats"}, keyed by its
  slash-joined Flax path (`params/encoder/layer_0/kernel`), in Flax layouts.

Writes are atomic: the directory is built under a temporary name beside the target and
renamed into place (an existing directory is swapped out and then removed), so readers
never see a half-written checkpoint. Loading compares the stored config with a requested
one and refuses any difference with a ConfigError listing the differing fields.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Mapping

import numpy as np
from safetensors.numpy import load_file, save_file

from secoustic_jax.atomic import shareable
from secoustic_jax.checkpoint.table import CheckpointError, set_path
from secoustic_jax.tree import flatten
from secoustic_jax.config.base import ConfigError, diff, from_dict, to_dict
from secoustic_jax.config.model import CodecConfig

FORMAT = "secoustic-codec"
FORMAT_VERSION = 1
CONFIG_FILE = "codec.json"
VARIABLES_FILE = "variables.safetensors"


def is_codec_dir(path) -> bool:
    """True when `path` looks like a `Codec.save` directory."""
    return (pathlib.Path(path) / CONFIG_FILE).is_file()


def save(directory, cfg: CodecConfig, variables: Mapping) -> pathlib.Path:
    """Writes `variables` ({"params", "batch_stats"}) and `cfg` to `directory`, atomically."""
    target = pathlib.Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent))
    try:
        flat = {"/".join(p): np.array(v, order="C")  # keeps 0-d scalars 0-d
                for p, v in flatten(dict(variables)).items()}
        save_file(flat, str(tmp / VARIABLES_FILE))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": to_dict(cfg)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():  # safetensors writes its file 0600 too
            shareable(f)
        shareable(tmp, directory=True)
        _swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _swap_into_place(tmp: pathlib.Path, target: pathlib.Path) -> None:
    if target.exists() and not is_codec_dir(target) and any(target.iterdir()):
        raise CheckpointError(f"{target}: exists and is not a codec directory; not overwriting")
    old = None
    if target.exists():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                            dir=target.parent))
        os.replace(target, old / "x")
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old)


def read_config(directory) -> CodecConfig:
    """The CodecConfig stored in a codec directory (strict)."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a codec directory ({CONFIG_FILE} missing)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('format_version')!r}, this "
                              f"code reads version {FORMAT_VERSION}")
    return from_dict(CodecConfig, meta["config"])


def load(directory, config: CodecConfig | None = None) -> tuple[CodecConfig, dict]:
    """Reads (config, variables); a given `config` must equal the stored one."""
    stored = read_config(directory)
    if config is not None and config != stored:
        raise ConfigError(f"{directory}: stored config differs from the requested one:\n  "
                          + "\n  ".join(diff(stored, config)))
    path = pathlib.Path(directory) / VARIABLES_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: {VARIABLES_FILE} missing")
    try:
        flat = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or "
                              f"corrupt?): {e}") from e
    variables: dict = {}
    for key, value in flat.items():
        set_path(variables, tuple(key.split("/")), value)
    return stored, variables
