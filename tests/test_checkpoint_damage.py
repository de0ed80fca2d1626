"""A damaged latest checkpoint never strands a run (training/resume.py): each of six damages
to checkpoint 30 of a 30-step run is detected, the checkpoint is set aside (renamed, not
deleted) with its reason, and the rerun resumes from checkpoint 20 with the losses and the
final weights of the uninterrupted run, and one history row per step."""

import shutil

import jax
import numpy as np
import pytest

from secoustic_jax.training.checkpoint import load_codec_variables
from secoustic_jax.training.logging import read_history
from secoustic_jax.training.resume import DAMAGED_DIR
from train_standin import standin_train, tiny_experiment

CFG = tiny_experiment({"checkpoint.every_steps": 10}, steps=(30, 0))


def _data_file(ckpt):
    """The largest OCDBT data file of the state item (the array bytes)."""
    return max((ckpt / "state").glob("ocdbt.process_*/d/*"), key=lambda p: p.stat().st_size)


def _truncate(ckpt):
    f = _data_file(ckpt)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(ckpt):
    f = _data_file(ckpt)
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(b ^ 0xFF for b in data[mid:mid + 4096])
    f.write_bytes(bytes(data))


DAMAGES = {
    "truncated_data_file": _truncate,
    "manifest_deleted": lambda c: (c / "state" / "manifest.ocdbt").unlink(),
    "meta_deleted": lambda c: (c / "meta" / "metadata").unlink(),
    "data_state_emptied": lambda c: (c / "data" / "process_0-of-1.json").write_text(""),
    "state_deleted": lambda c: shutil.rmtree(c / "state"),
    "bytes_flipped": _flip,
}


def _losses(rows):
    return {r["step"]: r["loss/total"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("uninterrupted")
    standin_train(CFG, wd)
    return wd


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes(damage, reference, tmp_path,
                                                                    capfd):
    wd = tmp_path / "run"
    shutil.copytree(reference, wd)
    DAMAGES[damage](wd / "checkpoints" / "30")
    summary = standin_train(CFG, wd)
    assert summary["resumed_from"] == 20
    err = capfd.readouterr().err
    assert "checkpoint 30 is damaged" in err and "resuming from checkpoint 20" in err
    aside = wd / DAMAGED_DIR / "30"
    assert aside.is_dir() and (aside / "REASON").read_text().strip()  # kept, with the reason
    rows = read_history(wd)
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert steps == sorted(set(steps))  # the superseded rows of 21..30 were dropped
    assert _losses(rows) == _losses(read_history(reference))  # bitwise equal floats
    _, got = load_codec_variables(wd)
    _, want = load_codec_variables(reference)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_checkpoint_damaged_starts_afresh_and_says_so(reference, tmp_path, capfd):
    wd = tmp_path / "run"
    shutil.copytree(reference, wd)
    for step in (10, 20, 30):
        DAMAGES["meta_deleted"](wd / "checkpoints" / str(step))
    summary = standin_train(CFG, wd)
    assert summary["resumed_from"] is None
    assert "starting from scratch" in capfd.readouterr().err
    assert sorted(p.name for p in (wd / DAMAGED_DIR).iterdir()) == ["10", "20", "30"]
    assert _losses(read_history(wd)) == _losses(read_history(reference))
