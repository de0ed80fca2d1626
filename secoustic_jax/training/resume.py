"""Which checkpoint a run resumes from: verified, newest first; damaged ones set aside.

A checkpoint is used only when all of it reads back: the meta JSON, this process's data
iterator state and the whole TrainState, whose bit patterns must also match the checksum
recorded when it was saved (orbax's own checks miss bytes flipped inside a chunk). One
that fails is moved, never deleted, to `<workdir>/checkpoints_damaged/<step>` with the
reason beside it, and the next-newest is tried. A config or phone-inventory mismatch is
not damage: it is the user's error and stops the run (checkpoint.check_config).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.training import distributed
from secoustic_jax.training.checkpoint import Checkpointer, check_config, checkpoint_dir

DAMAGED_DIR = "checkpoints_damaged"
_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


@jax.jit
def _checksum(tree):
    total = jnp.uint32(0)
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        x = jnp.asarray(leaf)
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
        # Odd per-leaf weights: a flipped bit changes the sum, so does a swap of two leaves.
        total = total + jnp.sum(bits, dtype=jnp.uint32) * jnp.uint32(2 * i + 1)
    return total


def state_checksum(state) -> int:
    """Sum (mod 2^32) of the bit patterns of every leaf of `state`, leaf-weighted."""
    return int(jax.device_get(_checksum(state)))


def set_aside(workdir, step: int, reason: str) -> pathlib.Path:
    """Moves checkpoint `step` to <workdir>/checkpoints_damaged/<step>[-n] with a REASON
    file; returns the new path."""
    src = checkpoint_dir(workdir) / str(step)
    root = pathlib.Path(workdir).resolve() / DAMAGED_DIR
    root.mkdir(parents=True, exist_ok=True)
    dst, n = root / str(step), 1
    while dst.exists():
        dst, n = root / f"{step}-{n}", n + 1
    shutil.move(str(src), str(dst))
    (dst / "REASON").write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {reason}\n")
    return dst


def _verify(ckpt: Checkpointer, step: int, config: ExperimentConfig, inventory: list[str],
            abstract_for: Callable[[int], object]):
    """-> (meta, state, data_state) or (None, reason). Config errors propagate."""
    try:
        meta = ckpt.read_meta(step)
        stage_index = int(meta["stage_index"])
    except Exception as e:  # noqa: BLE001 - any unreadable meta is damage
        return None, f"meta unreadable ({type(e).__name__}: {_short(e)})"
    meta = dict(meta, later_stage_changes=check_config(meta, config))
    if meta["phones"] != inventory:
        raise ConfigError("the checkpoint's phone inventory differs from the data's; "
                         "resume with the same corpus or start a new workdir")
    try:
        state, data_state = ckpt.restore(step, abstract_for(stage_index))
    except Exception as e:  # noqa: BLE001 - truncated, missing or corrupt items
        return None, f"state or data unreadable ({type(e).__name__}: {_short(e)})"
    try:  # every source's iterator state is a JSON object (training/data.py, batching.py)
        if not isinstance(json.loads(bytes(data_state).decode()), dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        return None, f"data iterator state of process {jax.process_index()} unreadable ({e})"
    want = meta.get("state_checksum")
    if want is not None and state_checksum(state) != int(want):
        return None, f"state checksum {state_checksum(state)} != recorded {want} (corrupt bytes)"
    return (meta, state, data_state), ""


def _short(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def find_resume(ckpt: Checkpointer, workdir, config: ExperimentConfig, inventory: list[str],
                abstract_for: Callable[[int], object]) -> dict | None:
    """The newest checkpoint that verifies, as dict(meta, checkpoint=step, state=...,
    data_state=...), or None for a fresh run. Damaged ones are set aside (process 0 moves
    them; every process agrees first, so all resume from the same step)."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        found, reason = _verify(ckpt, step, config, inventory, abstract_for)
        if not distributed.any_host(found is None):
            meta, state, data_state = found
            return dict(meta, checkpoint=step, state=state, data_state=data_state)
        reason = reason or "damaged on another process"
        if jax.process_index() == 0:
            where = set_aside(workdir, step, reason)
            print(f"checkpoint {step} is damaged: {reason}; moved to {where}; trying the "
                  "previous checkpoint", file=sys.stderr, flush=True)
        distributed.barrier(f"set_aside_{step}")
        ckpt.manager.reload()
    return None


def describe(resume: dict | None) -> str:
    """One line for the log: where the run starts."""
    if resume is None:
        return "starting from scratch"
    line = (f"resuming from checkpoint {resume['checkpoint']} (stage {resume['stage_index']}, "
            f"stage step {resume['stage_step']})")
    changes = resume.get("later_stage_changes")
    return line + (f"; stages not yet started changed: {'; '.join(changes)}" if changes else "")

