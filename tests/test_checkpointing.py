"""Checkpoint / resume through the real trainer loop (stand-in codec, synthetic data):
resume exactness across a crash and a stage boundary, SIGTERM, NaN guard, incomplete
checkpoints, config mismatch."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from secoustic_jax.config.base import ConfigError
from secoustic_jax.training.checkpoint import (Checkpointer, check_config, load_codec_variables,
                                             make_meta)
from secoustic_jax.training.logging import read_history
from secoustic_jax.training import loop
from secoustic_jax.training.loop import PersistentNaNError
from train_standin import STANDIN_INIT, STANDIN_TRAIN, standin_train, tiny_experiment

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Persistent compilation cache: the runs below compile identical programs."""
    old = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jaxcache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def _losses(workdir) -> dict[int, float]:
    """step -> total loss of the last logged occurrence (re-done steps overwrite)."""
    return {h["step"]: h["loss/total"] for h in read_history(workdir) if h["split"] == "train"}


class SimulatedCrash(Exception):
    """Raised in place of the process dying."""


def _crash_after(monkeypatch, n: int) -> None:
    """The next `train` dies (no save, no summary) when it is about to run its step n + 1,
    counted over all its stages: what survives is whatever its checkpoints hold, as after
    a crash (the data source and its device prefetch are left as they were)."""
    real, done = loop.build_stage, [0]

    def crashing(step_fn):
        def train_step(state, batch):
            if done[0] >= n:
                raise SimulatedCrash(f"after {n} steps")
            done[0] += 1
            return step_fn(state, batch)
        return train_step

    def build_stage(*args, **kwargs):
        rt = real(*args, **kwargs)
        return dataclasses.replace(rt, train_step=crashing(rt.train_step))

    monkeypatch.setattr(loop, "build_stage", build_stage)


@pytest.fixture(scope="module")
def packed_wave(tmp_path_factory):
    """The tiny corpus packed with waveforms (4 records a shard)."""
    from _data_helpers import tiny_corpus
    from secoustic_jax.data.pack import PackOptions, pack_dataset

    out = tmp_path_factory.mktemp("packed_wave")
    pack_dataset(tiny_corpus(tmp_path_factory), out, ("train", "valid"), log=lambda *a: None,
                 opts=PackOptions(waveform=True, records_per_shard=4, workers=1))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", ["synthetic", "packed_waveform"])
def test_crash_and_resume_gives_exactly_the_uninterrupted_losses(source, tmp_path, monkeypatch,
                                                                 request):
    over = {}
    if source == "packed_waveform":  # packed shards, mel on the device, hosts by shard file
        over = {"data.kind": "packed", "data.packed": str(request.getfixturevalue("packed_wave")),
                "data.pipeline.max_phones": 96, "data.pipeline.features": "waveform",
                "data.pipeline.host_split": "shards"}
    cfg = tiny_experiment(over, steps=(4, 4), frames=128 if over else 32)
    ref = standin_train(cfg, tmp_path / "ref")
    assert ref["last_checkpoint"] == 8 and not ref["preempted"]
    wd = tmp_path / "run"
    for steps, resumed_from, saved in ((3, None, 2), (4, 2, 6)):  # the 2nd crosses the stage end
        with monkeypatch.context() as m:
            _crash_after(m, steps)
            with pytest.raises(SimulatedCrash):
                standin_train(cfg, wd)
        ck = Checkpointer(wd)
        assert ck.latest_step() == saved
        ck.close()
        got = [r["step"] for r in read_history(wd) if r["split"] == "train"]
        assert got[-1] == (resumed_from or 0) + steps  # it did get that far before dying
    third = standin_train(cfg, wd)
    assert third["resumed_from"] == 6 and third["last_checkpoint"] == 8
    want, got = _losses(tmp_path / "ref"), _losses(wd)
    assert sorted(want) == list(range(1, 9)) and got == want  # bitwise equal floats
    # One history: the rows each "crashed" run logged past its last checkpoint are gone.
    assert [r["step"] for r in read_history(wd) if r["split"] == "train"] == list(range(1, 9))
    # The stage boundary is part of the run state.
    meta = Checkpointer(wd).read_meta(4)
    assert meta["stage_index"] == 0 and meta["stage_done"] and meta["stage_step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_writes_a_restorable_checkpoint(sig, tmp_path):
    # SIGTERM (preemption) and SIGINT (Ctrl-C) both checkpoint at the step boundary, exit 0.
    wd = tmp_path / "run"
    cmd = [*STANDIN_TRAIN, "--config", str(REPO / "configs/tiny.py"),
           "--workdir", str(wd), "--no-progress"]
    over = {"data.kind": "synthetic", **STANDIN_INIT,
            "stages.acoustic.steps": 100000, "stages.acoustic.batch_size": 4,
            "stages.acoustic.segment_frames": 32, "checkpoint.every_steps": 100000,
            "log.every_steps": 1, "data.pipeline.max_phones": 16}
    for k, v in over.items():
        cmd += ["--set", f"{k}={v}"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 500
        while len(read_history(wd)) < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "training did not start in time"
            time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "preempted" in err and "Traceback" not in err
    summary = json.loads(out[out.index("{"):])
    step = summary["last_checkpoint"]
    assert summary["preempted"] and step >= 3
    cfg, variables = load_codec_variables(wd)
    assert cfg.variant == "tiny" and "encoder" in variables["params"]
    meta = Checkpointer(wd).read_meta(step)
    assert meta["stage_step"] == step and not meta["stage_done"]


@pytest.mark.slow
def test_nan_batch_is_skipped_and_never_saved(tmp_path):
    cfg = tiny_experiment({"data.synthetic_nan_batches": [1]}, steps=(4, 0))
    summary = standin_train(cfg, tmp_path)
    hist = [h for h in read_history(tmp_path) if h["split"] == "train"]
    assert [h["skipped"] for h in hist] == [0.0, 1.0, 0.0, 0.0]
    assert summary["last_checkpoint"] == 4
    ck = Checkpointer(tmp_path)
    for step in ck.all_steps():
        state = ck.restore_host(step)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
        assert int(state["nan_skipped"]) == (0 if step < 2 else 1)
    # Persistent NaN stops the run with a clear message (and saves nothing non-finite).
    bad = tiny_experiment({"data.synthetic_nan_batches": [0, 1, 2, 3], "nan_max_consecutive": 3},
                          steps=(4, 0))
    with pytest.raises(PersistentNaNError, match="3 consecutive steps"):
        standin_train(bad, tmp_path / "bad")


@pytest.mark.slow
def test_incomplete_checkpoint_is_ignored_and_config_mismatch_refused(tmp_path):
    cfg = tiny_experiment(steps=(2, 0))
    standin_train(cfg, tmp_path)
    # A save killed half-way leaves orbax's temporary folder; it is never listed or restored.
    tmp = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_text("partial")
    assert Checkpointer(tmp_path).latest_step() == 2
    again = standin_train(cfg, tmp_path)  # finished stage: nothing left to do
    assert again["resumed_from"] == 2 and again["last_checkpoint"] == 2
    with pytest.raises(ConfigError, match="optim.lr"):
        standin_train(tiny_experiment({"optim.lr": 5e-4}, steps=(2, 0)), tmp_path)


def test_a_retired_field_at_its_old_default_still_resumes_and_real_changes_are_named():
    cfg = tiny_experiment(steps=(2, 0))
    meta = make_meta(cfg, stage_index=0, stage_step=1, step=1, inventory=["a"])
    old = dict(meta, config=dict(meta["config"], codec_factory=""), fingerprint="older")
    check_config(old, cfg)  # written before codec_factory left the config: same run
    custom = dict(old, config=dict(old["config"], codec_factory="mod:fn"))
    with pytest.raises(ConfigError, match="codec_factory"):  # a non-default value: refused
        check_config(custom, cfg)
    changed = dict(old, config=dict(old["config"], seed=7))
    with pytest.raises(ConfigError, match="seed"):
        check_config(changed, cfg)


def test_stages_not_yet_started_may_change_length_and_nothing_else():
    """The demo re-plans its last stage on resume: a checkpoint of stage i records nothing of
    the stages after i, so their `enabled` / `steps` may differ; every other field, and the
    length of a stage already started, is still refused by name."""
    cfg = tiny_experiment(steps=(2, 2))
    meta = make_meta(cfg, stage_index=1, stage_step=2, step=4, inventory=["a"], stage_done=True)
    later = tiny_experiment({"stages.finetune.enabled": True, "stages.finetune.steps": 7},
                            steps=(2, 2))
    accepted = check_config(meta, later)
    assert sorted(d.split(":")[0] for d in accepted) == ["stages.finetune.enabled",
                                                        "stages.finetune.steps"]
    assert check_config(meta, cfg) == []
    with pytest.raises(ConfigError, match="stages.semantic.steps"):  # started: its schedule
        check_config(meta, tiny_experiment(steps=(2, 3)))
    with pytest.raises(ConfigError, match="stages.finetune.batch_size"):  # not a length
        check_config(meta, tiny_experiment({"stages.finetune.batch_size": 5}, steps=(2, 2)))
    in_last = make_meta(later, stage_index=2, stage_step=1, step=5, inventory=["a"])
    with pytest.raises(ConfigError, match="stages.finetune.steps"):
        check_config(in_last, tiny_experiment({"stages.finetune.enabled": True,
                                               "stages.finetune.steps": 9}, steps=(2, 2)))


@pytest.mark.slow
def test_a_finished_run_resumes_into_a_later_stage_added_afterwards(tmp_path):
    """Train stages 1-2, then resume the same workdir with stage 3 enabled (what the demo does
    after re-planning it): only stage 3 runs, from the stage-2 checkpoint, and its final
    checkpoint records the config that ran it."""
    last = {"stages.finetune.steps": 2, "stages.finetune.batch_size": 4,
            "stages.finetune.segment_frames": 32}
    standin_train(tiny_experiment({**last, "stages.finetune.enabled": False}, steps=(2, 2)),
                  tmp_path)
    full = tiny_experiment({**last, "stages.finetune.enabled": True}, steps=(2, 2))
    out = standin_train(full, tmp_path)
    assert out["resumed_from"] == 4 and list(out["stages"]) == ["finetune"]
    assert out["stages"]["finetune"]["steps_run"] == 2 and out["last_checkpoint"] == 6
    # log.every_steps is 1: the rate for planning leaves out the first step (the compile).
    assert out["stages"]["finetune"]["steady_steps"] == 1
    meta = Checkpointer(tmp_path).read_meta(6)
    assert meta["stage_index"] == 2 and meta["config"]["stages"]["finetune"]["enabled"] is True
    with pytest.raises(ConfigError, match="stages.finetune.steps"):  # now it has run
        standin_train(dataclasses.replace(full, stages=dataclasses.replace(
            full.stages, finetune=dataclasses.replace(full.stages.finetune, steps=3))), tmp_path)
