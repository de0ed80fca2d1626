"""`make demo`: the time-budget plan (fast) and a smoke run of every phase (slow)."""

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _estimate(plan) -> float:
    """Idle-machine seconds the plan is expected to take (COST model of demo_plan)."""
    from secoustic_jax.demo_plan import COST

    fixed = sum(COST[k] for k in ("setup", "corpus", "asterisk", "train_compile",
                                  "train_validation", "eval_fixed", "timing", "report"))
    steps = COST["train_step"][0] * plan.train_steps[0] + COST["train_step"][1] * plan.train_steps[1]
    return fixed + steps + plan.eval_sizes.seconds()


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0])
def test_plan_fits_the_budget(factor):
    from secoustic_jax.demo_plan import EVAL_MAX, EVAL_MIN, MAX_STEP_SCALE, NOMINAL_STEPS, make_plan

    plan = make_plan(55 * 60, factor)
    assert _estimate(plan) * factor <= 55 * 60
    for n, nominal in zip(plan.train_steps, NOMINAL_STEPS):
        assert 60 <= n <= MAX_STEP_SCALE * nominal and n % 10 == 0
    e = plan.eval_sizes
    assert EVAL_MIN.e1 <= e.e1 <= EVAL_MAX.e1 and EVAL_MIN.vc_pairs <= e.vc_pairs <= EVAL_MAX.vc_pairs


def test_plan_degrades_to_minimum_on_a_saturated_machine():
    from secoustic_jax.demo_plan import EVAL_MIN, MIN_STEPS, make_plan, plan_eval

    plan = make_plan(55 * 60, 50.0)
    assert plan.train_steps == (MIN_STEPS, MIN_STEPS) and plan.eval_sizes == EVAL_MIN
    small, big = plan_eval(600, 1.0), plan_eval(3600, 1.0)
    assert small.e1 <= big.e1 and small.e2_unseen <= big.e2_unseen


def test_train_overrides_make_a_valid_config(tmp_path):
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.demo_plan import make_plan

    plan = make_plan(55 * 60, 1.0)
    cfg = load_experiment(ROOT / "configs" / "tiny.py", plan.train_overrides(tmp_path))
    assert (cfg.stages.acoustic.steps, cfg.stages.semantic.steps) == plan.train_steps
    assert cfg.loss.kl_ramp_start < cfg.loss.kl_ramp_end <= cfg.stages.semantic.steps
    assert cfg.data.root == str(tmp_path) and cfg.enabled_stages == (0, 1)


@pytest.mark.slow  # every phase for real on the tiny corpus: ~5 min idle, 15+ loaded
def test_quick_demo_runs_every_phase(tmp_path):
    from secoustic_jax import demo

    assert demo.main(["--out", str(tmp_path / "demo"), "--quick", "--budget-min", "60"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["status"] == "ok" and list(summary["phases"]) == list(demo.PHASES)
    assert all(p["status"] == "ok" and p["wall_s"] > 0 for p in summary["phases"].values())
    md = (tmp_path / "demo" / "report.md").read_text()
    for link in ("example/loss.png", "example/tokens_E2_token.png"):
        assert link in md and (tmp_path / "demo" / link).is_file()
    size = sum(f.stat().st_size for f in (tmp_path / "demo" / "example").iterdir())
    assert size < 2_000_000
