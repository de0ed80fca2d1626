"""bench/device_check.py on this CPU with tiny shapes (the device run uses the same code)."""

from __future__ import annotations

import json
import math

import pytest

from secoustic_jax import flops
from secoustic_jax.config.train import load_experiment

from _bench_helpers import BENCH, bench_module



def _module():
    return bench_module("device_check")


def test_chip_peaks_by_device_kind():
    dc = _module()
    assert dc.chip_peak("NVIDIA H200") == 989e12
    assert dc.chip_peak("TPU v5 lite") == 197e12 and dc.chip_peak("TPU v5p") == 459e12
    assert dc.chip_peak("cpu") is None


def test_spent_budget_records_rows_as_skipped(tmp_path):
    dc = _module()
    out = tmp_path / "dc.json"
    assert dc.main(["--quick", "--budget-s", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["train"] + result["offline"] + result["streaming"]
    assert len(result["train"]) == 4 and len(rows) == 7  # 2 stages x 2 dtypes, 2 offline, 1
    assert all("skipped" in r for r in rows)


@pytest.mark.slow
def test_quick_run_measures_every_row(tmp_path):
    dc = _module()
    out = tmp_path / "dc.json"
    assert dc.main(["--quick", "--dtypes", "float32", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["stage"], r["dtype"]) for r in result["train"]] == [(1, "float32"), (2, "float32")]
    for r in result["train"]:
        assert r["median_step_s"] > 0 and math.isfinite(r["loss"])
        assert 0 < r["mfu_vs_measured_matmul"] < 5  # model FLOPs over a measured matmul rate
        assert r["memory"]["peak_estimate_bytes"] > 0
    cfg = load_experiment(BENCH.parent / "configs/tiny.py").codec
    for r in result["train"]:  # the numerator is flops.py's count for that stage and shape
        want = flops.train_step(cfg, r["stage"], 2, 64, prompt_frames=cfg.paralinguistic.prompt_frames)
        assert r["model_tflop_per_step"] == pytest.approx(want / 1e12, rel=1e-12)
    (off,) = result["offline"]
    assert off["encode_audio_s_per_s"] > 0 and off["decode_audio_s_per_s"] > 0
    (stream,) = result["streaming"]
    assert stream["median_ms"] > 0 and stream["rtf"] == pytest.approx(
        stream["median_ms"] / stream["token_period_ms"])
