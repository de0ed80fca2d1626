"""Orbax checkpoints of a training run (maxtext checkpointing.py style).

Layout: <workdir>/checkpoints/<step>/
  state/  the TrainState (params {"codec", "aux"}, batch_stats, opt_state, counters, rng)
  data/   grain iterator state, one JSON per process (process_<i>-of-<n>.json)
  meta/   JSON: config (to_dict), its fingerprint, stage index, stage step, phone inventory
Orbax writes into a temporary directory and renames it when the save is committed, so a
step directory that is listed is complete; a half-written one (killed mid-save) carries
the tmp suffix and is never listed, hence never restored.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from secoustic_jax.config.base import ConfigError, diff, fingerprint, from_dict, to_dict
from secoustic_jax.config.model import CodecConfig
from secoustic_jax.config.train import STAGE_NAMES, CheckpointConfig, ExperimentConfig

FORMAT = "secoustic-train-v1"
# Fields that do not change the maths of a run; a resume may change them.
RUNTIME_FIELDS = ("log", "checkpoint", "distributed", "execution")
# Top-level fields that ExperimentConfig no longer has, with the value that meant "as now":
# a checkpoint recording them at that value resumes (codec_factory moved to
# `train(codec_factory=)`).
RETIRED_FIELDS = {"codec_factory": ""}


class _IteratorSnapshot:
    """Holds iterator state bytes for grain's checkpoint handler (save and restore)."""

    def __init__(self, state: bytes = b""):
        self.state = state

    def get_state(self) -> bytes:
        return self.state

    def set_state(self, state: bytes) -> None:
        self.state = state

    def start_prefetch(self) -> None:  # called by grain's handler after restore
        pass


def run_fingerprint(config: ExperimentConfig) -> str:
    d = to_dict(config)
    return fingerprint({k: v for k, v in d.items() if k not in RUNTIME_FIELDS})


def checkpoint_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir).resolve() / "checkpoints"


class Checkpointer:
    """Thin wrapper over ocp.CheckpointManager with the composite of state + data + meta."""

    def __init__(self, workdir, cfg: CheckpointConfig | None = None):
        cfg = cfg or CheckpointConfig()
        opts = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep,
                                            enable_async_checkpointing=cfg.async_save, create=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                    "data": grain.checkpoint.CheckpointHandler()}
        self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=opts,
                                             item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: bytes, meta: dict) -> None:
        """Async save (returns at once; `wait()` blocks until committed)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_state)),
                                  meta=ocp.args.JsonSave(dict(meta, format=FORMAT)))
        self.manager.save(step, args=args, force=True)

    def read_meta(self, step: int) -> dict:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("format") != FORMAT:
            raise ConfigError(f"checkpoint {step}: format {meta.get('format')!r}, expected {FORMAT}")
        return meta

    def restore(self, step: int, abstract_state) -> tuple[Any, bytes]:
        """-> (TrainState placed with the template's shardings, data iterator bytes)."""
        snap = _IteratorSnapshot()
        self.manager.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(snap)))
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return out["state"], snap.state

    def restore_host(self, step: int):
        """The state as nested dicts of arrays on one local device, whatever mesh or process
        count wrote it (orbax needs an explicit target when the topology differs)."""
        meta = self.manager.item_metadata(step)["state"]
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta)
        return self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def make_meta(config: ExperimentConfig, *, stage_index: int, stage_step: int, step: int,
              inventory: list[str], stage_done: bool = False,
              state_checksum: int | None = None) -> dict:
    """The meta item; `state_checksum` (training/resume.py) lets a restore detect flipped
    bytes in the state files."""
    return {"config": to_dict(config), "fingerprint": run_fingerprint(config),
            "stage_index": stage_index, "stage_step": stage_step, "step": step,
            "stage_done": stage_done, "phones": list(inventory),
            "state_checksum": state_checksum}


def unstarted_stage_fields(stage_index: int) -> frozenset[str]:
    """`stages.<name>.enabled` and `.steps` of the stages after `stage_index`: a checkpoint
    written in (or at the end of) stage `stage_index` holds nothing of them, and the global
    steps of the stages up to it do not depend on them, so a resume may lengthen, shorten,
    add or drop them (the demo re-plans its last stage this way, docs/demo.md)."""
    later = STAGE_NAMES[stage_index + 1:]
    return frozenset(f"stages.{n}.{f}" for n in later for f in ("enabled", "steps"))


def check_config(meta: dict, config: ExperimentConfig) -> list[str]:
    """Refuses to resume a run whose recorded config differs from `config` (runtime-only
    fields and the length of stages not yet started excepted), naming the differing
    fields. -> the accepted differences of unstarted stages ([] when none)."""
    if meta["fingerprint"] == run_fingerprint(config):
        return []
    recorded = dict(meta["config"])
    for name, default in RETIRED_FIELDS.items():  # older checkpoints still record them
        if recorded.get(name, default) == default:
            recorded.pop(name, None)
    stored = from_dict(ExperimentConfig, recorded)
    changed = [d for d in diff(stored, config) if d.split(".")[0] not in RUNTIME_FIELDS]
    later = unstarted_stage_fields(int(meta["stage_index"]))
    refused = [d for d in changed if d.split(":")[0] not in later]
    if refused:
        raise ConfigError("the checkpoint was written with a different config; use a new "
                          "workdir or the stored config. Differences: " + "; ".join(refused[:12]))
    return [d for d in changed if d not in refused]


def load_codec_variables(workdir, step: int | None = None):
    """(CodecConfig, {"params", "batch_stats"} of the codec) from a run's checkpoint.

    Reads the latest complete checkpoint unless `step` is given; arrays come back as host
    jax arrays on the default device; the aux (training-only) subtree is dropped.
    """
    ck = Checkpointer(workdir, CheckpointConfig(async_save=False))
    try:
        step = ck.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint under {checkpoint_dir(workdir)}")
        meta = ck.read_meta(step)
        # Only the codec part is needed: training-only config fields may evolve.
        codec_cfg = from_dict(CodecConfig, meta["config"]["codec"])
        state = ck.restore_host(step)
    finally:
        ck.close()
    variables = {"params": state["params"]["codec"]}
    stats = (state.get("batch_stats") or {}).get("codec")
    if stats:
        variables["batch_stats"] = stats
    return codec_cfg, jax.tree.map(jax.numpy.asarray, variables)
