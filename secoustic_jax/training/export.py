"""Reader of training checkpoints for `secoustic export-torch` (commands/codec.py EXPORT_SOURCES).

Accepts a run's workdir, its `checkpoints/` folder, or one step folder `checkpoints/<step>`.
"""

from __future__ import annotations

import pathlib

from secoustic_jax.training.checkpoint import load_codec_variables


def _locate(path: pathlib.Path) -> tuple[pathlib.Path, int | None] | None:
    """-> (workdir, step | None) when `path` looks like a training run, else None."""
    if (path / "checkpoints").is_dir():
        return path, None
    if path.name == "checkpoints" and path.is_dir():
        return path.parent, None
    if path.parent.name == "checkpoints" and path.name.isdigit() and (path / "meta").is_dir():
        return path.parent.parent, int(path.name)
    return None


def codec_variables_from_checkpoint(path):
    """(CodecConfig, {"params", "batch_stats"}) of a training checkpoint, or None if `path`
    is not a training run (so the next reader can try)."""
    found = _locate(pathlib.Path(path))
    if found is None:
        return None
    return load_codec_variables(*found)
