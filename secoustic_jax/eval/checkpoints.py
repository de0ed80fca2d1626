"""Loading the codec to evaluate from any checkpoint kind the project knows.

- a `Codec.save` directory (config.json + safetensors);
- a training workdir (orbax checkpoints under `<workdir>/checkpoints/`), read with
  `secoustic_jax.training.checkpoint.load_codec_variables` (latest complete step);
- an official `.pt` / `.safetensors` state dict (`--variant` to force 86hz / 21_5hz).
"""

from __future__ import annotations

import pathlib

from secoustic_jax.api import Codec
from secoustic_jax.checkpoint import codec_store
from secoustic_jax.eval.evaluate import checkpoint_entry
from secoustic_jax.training.checkpoint import load_codec_variables


def checkpoint_kind(path) -> str:
    """"codec_dir", "training_workdir" or "official" for `path`; ValueError otherwise."""
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.is_file():
        if p.suffix in (".pt", ".pth", ".safetensors", ".bin"):
            return "official"
        raise ValueError(f"{p}: unknown checkpoint file type {p.suffix!r} "
                         "(expected .pt / .safetensors, a codec directory or a training workdir)")
    if codec_store.is_codec_dir(p):
        return "codec_dir"
    if (p / "checkpoints").is_dir():
        return "training_workdir"
    raise ValueError(f"{p}: neither a Codec.save directory (config.json) nor a training "
                     "workdir (checkpoints/)")


def _training_step_dir(workdir: pathlib.Path, step: int | None) -> pathlib.Path:
    """The checkpoint step folder that was read (hashed for the report)."""
    steps = sorted(int(d.name) for d in (workdir / "checkpoints").iterdir()
                   if d.is_dir() and d.name.isdigit())
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint under {workdir / 'checkpoints'}")
    return workdir / "checkpoints" / str(steps[-1] if step is None else step)


def load_codec(path, variant: str | None = None, *, step: int | None = None):
    """-> (api.Codec, checkpoint entry {path, kind, sha256[, step]}) for report headers."""
    p = pathlib.Path(path)
    kind = checkpoint_kind(p)
    if kind == "official":
        codec = Codec.from_torch(p, variant=variant)
        return codec, checkpoint_entry(p, kind)
    if variant is not None:
        raise ValueError("--variant applies to official .pt/.safetensors files only; the "
                         f"{kind} {p} stores its config")
    if kind == "codec_dir":
        return Codec.load(p), checkpoint_entry(p, kind)
    config, variables = load_codec_variables(p, step)
    step_dir = _training_step_dir(p, step)
    entry = checkpoint_entry(step_dir, kind)
    entry.update(workdir=str(p), step=int(step_dir.name))
    return Codec(config, variables), entry
