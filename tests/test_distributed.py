"""Two processes on localhost (jax.distributed, 2 CPU devices each, data x fsdp mesh over
all 4): the trainer runs both stages a few steps, checkpoints, and every process writes its
own data-iterator state into the same checkpoint."""

import json
import os
import pathlib
import socket
import subprocess

import pytest

from secoustic_jax.training.checkpoint import Checkpointer, load_codec_variables
from secoustic_jax.training.logging import read_history
from train_standin import STANDIN_INIT, STANDIN_TRAIN

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_training_and_checkpoint(tmp_path):
    port = _free_port()
    over = {"data.kind": "synthetic", **STANDIN_INIT,
            "data.pipeline.max_phones": 16, "mesh.fsdp": 2, "log.every_steps": 1,
            "log.audio_examples": 0, "log.eval_batches": 1, "checkpoint.every_steps": 2,
            "distributed.coordinator_address": f"127.0.0.1:{port}",
            "distributed.num_processes": 2}
    for name in ("acoustic", "semantic"):
        over.update({f"stages.{name}.steps": 3, f"stages.{name}.batch_size": 4,
                     f"stages.{name}.segment_frames": 32})
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO / "tests"))
    procs = []
    for pid in range(2):
        cmd = [*STANDIN_TRAIN, "--config", str(REPO / "configs/tiny.py"),
               "--workdir", str(tmp_path), "--no-progress"]
        for k, v in dict(over, **{"distributed.process_id": pid}).items():
            cmd += ["--set", f"{k}={v}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=1200))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    summary = json.loads(outs[0][0][outs[0][0].index("{"):])
    assert summary["last_checkpoint"] == 6 and not summary["preempted"]
    hist = [h for h in read_history(tmp_path) if h["split"] == "train"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5, 6]  # process 0 logs once per step
    assert all(h["loss/total"] == h["loss/total"] for h in hist)  # finite (not NaN)
    ck = Checkpointer(tmp_path)
    assert ck.latest_step() == 6
    data_dir = tmp_path / "checkpoints" / "6" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    cfg, variables = load_codec_variables(tmp_path)
    assert "decoder" in variables["params"]
