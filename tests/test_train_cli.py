"""train.py's user errors (a bad --set value or field, a missing corpus, a config that
differs from the checkpoint's) are one line on stderr with exit 2, never a traceback."""

import os
import pathlib
import subprocess
import sys

import pytest

from train_standin import STANDIN_INIT, STANDIN_TRAIN, standin_train, tiny_experiment

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*sets, workdir, standin: bool = False):
    train_py = STANDIN_TRAIN if standin else [sys.executable, str(REPO / "train.py")]
    cmd = [*train_py, "--config", str(REPO / "configs/tiny.py"),
           "--workdir", str(workdir), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), JAX_PLATFORMS="cpu")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("sets, message", [
    (["optim.lr=abc"], "'abc' is not a number"),
    (["stages.acoustic.steps=1.5"], "is not an integer"),
    (["nosuch.key=1"], "unknown config field 'nosuch'"),
    (["data.root=/nonexistent/corpus"], "secoustic corpus build --out /nonexistent/corpus"),
])
def test_user_errors_are_one_line_and_exit_2(sets, message, tmp_path):
    proc = _run(*sets, workdir=tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("train.py: error: ") and message in lines[-1]
    assert "Traceback" not in proc.stderr


def test_a_config_that_differs_from_the_checkpoint_is_one_line(tmp_path):
    wd = tmp_path / "run"
    cfg = tiny_experiment({"checkpoint.every_steps": 2}, steps=(2, 0))
    standin_train(cfg, wd)
    sets = ["data.kind=synthetic", "data.pipeline.max_phones=16", *(f"{k}={v}" for k, v in
            dict(STANDIN_INIT, **{"optim.lr": 0.5}).items())]
    proc = _run(*sets, workdir=wd, standin=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "different config" in proc.stderr.splitlines()[-1]
