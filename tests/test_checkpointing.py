"""Checkpoint / resume through the real trainer loop (stand-in codec, synthetic data):
resume exactness across a crash and a stage boundary, SIGTERM, NaN guard, incomplete
checkpoints, config mismatch."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from secoustic_jax.config.base import ConfigError
from secoustic_jax.training.checkpoint import Checkpointer, load_codec_variables
from secoustic_jax.training.logging import read_history
from secoustic_jax.training.loop import PersistentNaNError, train
from train_standin import STANDIN_INIT, tiny_experiment

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


@pytest.mark.slow
def test_crash_and_resume_gives_exactly_the_uninterrupted_losses(tmp_path):
    cfg = tiny_experiment(steps=(4, 4))
    ref = train(cfg, tmp_path / "ref", progress=False)
    assert ref["last_checkpoint"] == 8 and not ref["stopped"]
    wd = tmp_path / "run"
    first = train(cfg, wd, progress=False, max_steps=3)  # "crash" after step 3 (ckpt at 2)
    assert first["stopped"] and first["last_checkpoint"] == 2
    second = train(cfg, wd, progress=False, max_steps=6)  # resumes at 2, crosses the stage end
    assert second["resumed_from"] == 2 and second["last_checkpoint"] == 6
    third = train(cfg, wd, progress=False)
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
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/tiny.py"),
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
    summary = train(cfg, tmp_path, progress=False)
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
        train(bad, tmp_path / "bad", progress=False)


@pytest.mark.slow
def test_incomplete_checkpoint_is_ignored_and_config_mismatch_refused(tmp_path):
    cfg = tiny_experiment(steps=(2, 0))
    train(cfg, tmp_path, progress=False)
    # A save killed half-way leaves orbax's temporary folder; it is never listed or restored.
    tmp = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_text("partial")
    assert Checkpointer(tmp_path).latest_step() == 2
    again = train(cfg, tmp_path, progress=False)  # finished stage: nothing left to do
    assert again["resumed_from"] == 2 and again["last_checkpoint"] == 2
    with pytest.raises(ConfigError, match="optim.lr"):
        train(tiny_experiment({"optim.lr": 5e-4}, steps=(2, 0)), tmp_path, progress=False)
