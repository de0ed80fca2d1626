"""Strict import and export of official SecoustiCodec checkpoints (model.md §15).

Import: read the file (`weights_only=True` unless trusted), detect the variant from the
kernel width of the four resampling convolutions (2 -> `86hz`, 4 -> `21_5hz`), check it
against the requested variant / config, then map every key through the one name table
(`codec_names.codec_table`) strictly: missing, unexpected, mis-shaped or mis-typed keys
and non-finite values are errors that name the keys.

Export: the same table in reverse, giving exactly the official keys, in TSV order, with
TSV shapes and dtypes (float32, `num_batches_tracked` int64 scalars), written as
`.safetensors` (keys stored sorted by the format) or `.pt` (plain ordered state dict).
Import -> export reproduces every tensor bit for bit.

Variables are the nested Flax dict `{"params": ..., "batch_stats": ...}` (unboxed;
numpy or jax leaves).
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Mapping

import numpy as np

from secoustic_jax.checkpoint.codec_names import codec_table, resample_keys
from secoustic_jax.checkpoint.table import CheckpointError, export_state_dict, import_state_dict
from secoustic_jax.checkpoint.torch_io import load_state_dict_with_metadata, save_state_dict
from secoustic_jax.config.base import from_dict, to_dict
from secoustic_jax.config.model import VARIANT_RATIOS, CodecConfig, codec_preset

log = logging.getLogger(__name__)

_OFFICIAL_SEANET = codec_preset("86hz").seanet  # the official index layout of the 4 keys


def _variant_of_ratio(ratio: int) -> str | None:
    for name, ratios in VARIANT_RATIOS.items():
        if ratios == (ratio,) * len(ratios):
            return name
    return None


def detect_variant(state_dict: Mapping[str, np.ndarray], what: str = "checkpoint") -> str:
    """`86hz` or `21_5hz` from the resampling-conv kernel widths (2 * ratio).

    Raises CheckpointError when a resampling key is missing or the widths disagree or
    match no official variant.
    """
    widths = {}
    for key, _ in resample_keys(_OFFICIAL_SEANET):
        if key not in state_dict:
            raise CheckpointError(f"{what}: cannot detect the codec variant: key {key!r} is "
                                  "missing (not a SecoustiCodec state dict?)")
        widths[key] = int(np.shape(state_dict[key])[-1])
    kinds = set(widths.values())
    variant = _variant_of_ratio(kinds.pop() // 2) if len(kinds) == 1 else None
    if variant is None:
        listing = ", ".join(f"{k}: {w}" for k, w in widths.items())
        raise CheckpointError(f"{what}: resampling kernel widths ({listing}) match no known "
                              "variant (2 = 86hz, 4 = 21_5hz)")
    return variant


def check_variant(state_dict: Mapping[str, np.ndarray], cfg: CodecConfig,
                  what: str = "checkpoint") -> None:
    """Refuses a checkpoint whose resampling kernels do not fit `cfg.seanet.ratios`."""
    bad = []
    for key, ratio in resample_keys(cfg.seanet):
        if key in state_dict and int(np.shape(state_dict[key])[-1]) != 2 * ratio:
            bad.append(f"{key} has kernel width {np.shape(state_dict[key])[-1]}, "
                       f"expected {2 * ratio}")
    if bad:
        try:
            found = f"the {detect_variant(state_dict, what)} variant"
        except CheckpointError:
            found = "another variant"
        raise CheckpointError(f"{what}: wrong variant: the file holds {found}, but the requested "
                              f"config is {cfg.variant!r} (seanet.ratios {list(cfg.seanet.ratios)}): "
                              + "; ".join(bad))


def resolve_config(state_dict: Mapping[str, np.ndarray], variant: str | None = None,
                   config: CodecConfig | None = None, what: str = "checkpoint") -> CodecConfig:
    """The config to import into: `config`, else the preset `variant`, else the detected one.

    When both are given they must agree; the file must fit the result (check_variant).
    """
    if config is not None and variant is not None and config.variant != variant:
        raise CheckpointError(f"variant {variant!r} conflicts with config.variant "
                              f"{config.variant!r}")
    if config is None:
        if variant is None:
            variant = detect_variant(state_dict, what)
        elif variant not in VARIANT_RATIOS:
            raise CheckpointError(f"unknown variant {variant!r} (have {sorted(VARIANT_RATIOS)})")
        config = codec_preset(variant)
    check_variant(state_dict, config, what)
    return config


def _check_finite(state_dict: Mapping[str, np.ndarray], what: str) -> None:
    bad = [k for k, v in state_dict.items()
           if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} tensor(s) hold NaN/Inf values: "
                              + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))


def import_codec_state_dict(state_dict: Mapping[str, np.ndarray], cfg: CodecConfig, *,
                            what: str = "checkpoint",
                            ignore_prefixes: tuple[str, ...] = ()) -> dict:
    """Official state dict -> `{"params", "batch_stats"}` numpy tree for `SecoustiCodec(cfg)`."""
    check_variant(state_dict, cfg, what)
    variables = import_state_dict(codec_table(cfg), state_dict, what=what,
                                  ignore_prefixes=ignore_prefixes)
    _check_finite(state_dict, what)
    return variables


def import_codec(path, variant: str | None = None, config: CodecConfig | None = None, *,
                 trusted: bool = False,
                 ignore_prefixes: tuple[str, ...] = ()) -> tuple[CodecConfig, dict, list[str]]:
    """Reads an official `.pt` / `.safetensors` codec checkpoint strictly.

    Returns (config, variables, notes); notes say what was unwrapped or stripped
    (`{"model": ...}` wrapper, `module.` / `_orig_mod.` prefixes).
    """
    what = str(path)
    sd, notes, meta = load_state_dict_with_metadata(path, trusted=trusted)
    if not sd:
        raise CheckpointError(f"{what}: the state dict is empty")
    if config is None and "codec_config" in meta:  # written by export_codec
        config = recorded_config(meta, what)
        if variant is not None and variant != config.variant:
            raise CheckpointError(f"{what}: recorded config is variant {config.variant!r}, "
                                  f"not {variant!r}")
        notes.append(f"config from the file's metadata ({config.variant})")
    cfg = resolve_config(sd, variant, config, what)
    variables = import_codec_state_dict(sd, cfg, what=what, ignore_prefixes=ignore_prefixes)
    log.info("%s: imported %d tensors as variant %s", what, len(sd), cfg.variant)
    return cfg, variables, notes


def codec_state_dict(variables: Mapping, cfg: CodecConfig) -> dict[str, np.ndarray]:
    """Flax variables -> official state dict (numpy, torch layouts, official key order)."""
    tree = {c: variables[c] for c in ("params", "batch_stats") if c in variables}
    return export_state_dict(codec_table(cfg), tree, what=f"codec ({cfg.variant})")


def recorded_config(meta: Mapping[str, str], what: str = "checkpoint") -> CodecConfig:
    """The CodecConfig an export recorded in its metadata (strict)."""
    try:
        return from_dict(CodecConfig, json.loads(meta["codec_config"]))
    except (ValueError, TypeError) as e:  # ConfigError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{what}: unreadable recorded codec config: {e}") from e


def export_codec(variables: Mapping, cfg: CodecConfig, path) -> pathlib.Path:
    """Writes the official state dict to `path` (.pt or .safetensors by suffix), atomically,
    with `cfg` recorded outside the state dict (torch_io.METADATA_KEY) so that a non-preset
    network (e.g. a tiny training run) comes back in with `import-torch` unaided."""
    path = pathlib.Path(path)
    if path.suffix not in (".pt", ".pth", ".safetensors"):
        raise CheckpointError(f"{path}: unknown suffix (use .pt or .safetensors)")
    meta = {"codec_config": json.dumps(to_dict(cfg), sort_keys=True)}
    return save_state_dict(path, codec_state_dict(variables, cfg), meta)

