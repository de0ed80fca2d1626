"""Reading and writing official-layout state dicts: torch `.pt` and `.safetensors`.

torch is optional: `.safetensors` needs only numpy; `.pt` files need the torch extra.
Reads use `weights_only=True` unless the caller explicitly marks the file as trusted
(model.md §16.8). Writes are atomic (temporary file, then rename), so an interrupted
export never leaves a half-written file behind.
"""

from __future__ import annotations

import logging
import pathlib
from collections import OrderedDict
from typing import Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from secoustic_jax.atomic import atomic_path
from secoustic_jax.checkpoint.table import CheckpointError, strip_wrapper_prefixes

log = logging.getLogger(__name__)

# Where an export records its CodecConfig (JSON) outside the official state dict: the
# safetensors header metadata, or for .pt the state dict's `_metadata` attribute (torch's
# own per-module version table; `Module.load_state_dict` looks up module prefixes only, so
# an entry under this name is ignored by the official loader, strict=True included).
METADATA_KEY = "secoustic_jax"


def _import_torch():
    try:
        import torch  # optional: torch (torch extra)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError("reading or writing .pt files needs torch "
                              "(pip install torch==2.13.0, CPU build)") from e
    return torch


def load_state_dict(path, *, trusted: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """Loads a state dict from `.pt`/`.pth`/`.ckpt` or `.safetensors` as numpy arrays.

    A `.pt` holding `{"model": state_dict, ...}` is unwrapped, as the official loader
    does. `module.` / `_orig_mod.` prefixes are stripped. Returns (state_dict, notes),
    where notes say what was unwrapped or stripped.
    """
    sd, notes, _ = load_state_dict_with_metadata(path, trusted=trusted)
    return sd, notes


def load_state_dict_with_metadata(path, *, trusted: bool = False):
    """load_state_dict plus this project's metadata: (state_dict, notes, {str: str}); the
    metadata is empty for files this project did not write."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    notes: list[str] = []
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        try:
            sd = load_file(str(path))
            with safe_open(str(path), framework="numpy") as f:
                header = f.metadata() or {}
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file "
                                  f"(truncated or corrupt?): {e}") from e
        meta = {k[len(METADATA_KEY) + 1:]: v for k, v in header.items()
                if k.startswith(METADATA_KEY + ".")}
    else:
        sd = _load_torch_pickle(path, trusted, notes, meta)
    sd, stripped = strip_wrapper_prefixes(sd)
    notes += stripped
    for n in notes:
        log.info("%s: %s", path, n)
    return sd, notes, meta


def _load_torch_pickle(path: pathlib.Path, trusted: bool, notes: list[str], meta: dict) -> dict:
    torch = _import_torch()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trusted)
    except Exception as e:
        hint = "" if trusted else " (if it holds trusted non-tensor objects, pass trusted=True)"
        raise CheckpointError(f"{path}: cannot read torch checkpoint (truncated or "
                              f"corrupt?){hint}: {type(e).__name__}: {e}") from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
        notes.append("took the state dict under the 'model' key")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    ours = (getattr(obj, "_metadata", None) or {}).get(METADATA_KEY)
    if isinstance(ours, Mapping):
        meta.update({str(k): str(v) for k, v in ours.items()})
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().cpu().numpy()
    return out


def save_state_dict(path, state_dict: Mapping[str, np.ndarray],
                    metadata: Mapping[str, str] | None = None) -> pathlib.Path:
    """Writes a state dict by suffix: `.safetensors` (keys stored sorted) or `.pt`
    (a plain ordered dict of tensors in the given order). Atomic. `metadata` ({str: str})
    goes outside the state dict (see METADATA_KEY)."""
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    path = pathlib.Path(path)
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"{path}: unknown suffix (use .pt or .safetensors)")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file({k: np.array(v, order="C") for k, v in state_dict.items()}, tmp,
                      metadata={f"{METADATA_KEY}.{k}": v for k, v in metadata.items()} or None)
        else:
            torch = _import_torch()
            sd = OrderedDict((k, torch.from_numpy(np.array(v, order="C")))
                             for k, v in state_dict.items())
            if metadata:
                sd._metadata = OrderedDict({METADATA_KEY: metadata})
            torch.save(sd, tmp)
    return path
