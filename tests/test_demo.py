"""`make demo`: the time-budget plan (fast) and a smoke run of every phase (slow)."""

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _reserved(factor: float) -> float:
    from secoustic_jax.demo_plan import COST, eval_reserve

    return factor * (COST["train_compile"] + COST["train_validation"] + COST["stats"]) + eval_reserve(factor)


@pytest.mark.parametrize("factor", [1.0, 2.0])
@pytest.mark.parametrize("costs", [(0.1, 0.25, 0.3), (0.3, 0.2, 0.2)])
def test_train_steps_fill_the_time_left_from_measured_costs(factor, costs):
    from secoustic_jax.demo_plan import STAGE_TIME_SHARES, SUSTAINED_STEP, plan_train

    left = 60 * 60  # leaves ~19 min of steps at factor 2, so 10-step rounding stays < 1 %
    steps = plan_train(left, costs, factor)
    train_s = left - _reserved(factor)
    sustained = [c * SUSTAINED_STEP for c in costs]  # what a step costs over a whole stage
    spent = sum(n * c for n, c in zip(steps, sustained))
    # Fills the time to within the rounding of each stage down to a multiple of 10 steps.
    assert train_s - 10 * sum(sustained) <= spent <= train_s
    assert all(n % 10 == 0 for n in steps)
    for n, c, share in zip(steps, sustained, STAGE_TIME_SHARES):
        assert abs(n * c / train_s - share) < 0.01
    # No cap: twice the time left after the reserves gives twice the steps.
    double = plan_train(_reserved(factor) + 2 * train_s, costs, factor)
    assert all(abs(d - 2 * n) <= 10 for d, n in zip(double, steps))
    # Measured costs are used as they are: a step twice as dear gives half the steps.
    h1 = plan_train(left, (2 * costs[0], *costs[1:]), factor)[0]
    assert abs(h1 - steps[0] / 2) <= 10
    # A run that assumes another sustained/calibrated gap (make reproduce passes its own) sizes
    # each stage by it: steps scale by SUSTAINED_STEP / sustained (10-step rounding).
    slow = plan_train(left, costs, factor, sustained=1.2)
    assert all(abs(s - n * SUSTAINED_STEP / 1.2) <= 10 for s, n in zip(slow, steps))


def test_the_probe_reserve_scales_with_the_corpus_the_probes_read():
    from secoustic_jax.demo_plan import (COST, EVAL_MAX, PROBE_UTTS, eval_reserve, plan_eval,
                                         plan_train, replan_last)

    extra = 413 * COST["probe_per_utt"]  # 825 utterances ('default' corpus) instead of 412
    assert PROBE_UTTS == 412
    assert eval_reserve(2.0, probe_utts=825) == pytest.approx(eval_reserve(2.0) + 2.0 * extra)
    # The training time the probes now keep comes out of the steps, stage by stage.
    costs, left = (0.2, 0.2, 0.5), 120 * 60
    base, big = plan_train(left, costs, 1.0), plan_train(left, costs, 1.0, probe_utts=825)
    assert base == plan_train(left + extra, costs, 1.0, probe_utts=825)
    assert all(b < a for a, b in zip(base, big))
    assert replan_last(3600 + extra, costs, (1, 0.2), 1.0, probe_utts=825) == replan_last(
        3600, costs, (1, 0.2), 1.0)
    # The evaluation is sized after the probes' share: the same sets fit in `extra` more.
    assert plan_eval(750 + extra, 1.0, probe_utts=825) == plan_eval(750, 1.0) != EVAL_MAX


def test_the_last_stage_is_sized_again_from_the_measured_rate_of_the_one_before():
    from secoustic_jax.demo_plan import COST, MIN_STEPS, eval_reserve, replan_last

    cal, left = (0.1, 0.2, 0.5), 30 * 60
    train_s = left - (COST["train_compile"] + COST["train_validation"]) / 3 - eval_reserve(1.0)
    same, cost = replan_last(left, cal, (1, 0.2), 1.0)  # stage 2 ran as calibrated
    assert cost == pytest.approx(0.5) and train_s - 10 * cost <= same * cost <= train_s
    # Stage 2 ran 20 % slower than its calibration: stage 3 is predicted 20 % slower too.
    slow, cost = replan_last(left, cal, (1, 0.24), 1.0)
    assert cost == pytest.approx(0.6) and abs(slow - same / 1.2) <= 10
    fast, _ = replan_last(left, cal, (1, 0.18), 1.0)  # and 10 % faster: more steps, no cap
    assert abs(fast - same / 0.9) <= 10
    assert replan_last(60, cal, (1, 0.2), 1.0)[0] == MIN_STEPS
    with pytest.raises(ValueError, match="positive"):
        replan_last(left, cal, (1, 0.0), 1.0)


def test_the_replan_is_recorded_and_falls_back_to_the_estimate_without_a_measurement(tmp_path):
    import time

    from secoustic_jax.demo_plan import Plan, EVAL_MAX, replan_last
    from secoustic_jax.demo_train import _replan, saved_plan

    wd = tmp_path / "train"
    wd.mkdir()
    first = {"steps": [100, 200, 300], "step_costs": [0.1, 0.2, 0.5], "recipe": "A",
             "replanned": None}
    (wd / "plan_steps.json").write_text(json.dumps(first))
    ctx = {"budget_s": 3600.0, "t0": time.time(), "sustained": 1.1}

    def plan():
        return Plan(3600.0, 1.0, "50", EVAL_MAX, train_steps=(100, 200, 300),
                    step_costs=(0.1, 0.2, 0.5))

    measured = plan()
    _replan(ctx, measured, wd, "semantic", {"semantic": {
        "steps_run": 250, "wall_time_s": 70.0, "steady_steps": 200, "steady_wall_s": 50.0}})
    want = replan_last(3600.0, (0.1, 0.2, 0.5), (1, 0.25), 1.0)[0]
    assert abs(measured.train_steps[2] - want) <= 10  # the clock moved a little since
    assert measured.train_steps[:2] == (100, 200)
    assert measured.replanned["planned"] == 300 and "200 steps after its first log window at 0.250 s" in measured.replanned["measured"]
    got = saved_plan(wd, "A")  # a resumed demo finds the re-planned steps and does not redo it
    assert got["steps"] == list(measured.train_steps) and got["replanned"] == measured.replanned
    assert got["step_costs"] == first["step_costs"]
    # Stage 2 finished before this call (or ran < 50 steps past its first window in it):
    # calibrated x --sustained-step.
    guessed = plan()
    _replan(ctx, guessed, wd, "semantic", {"semantic": {
        "steps_run": 60, "wall_time_s": 9.0, "steady_steps": 10, "steady_wall_s": 2.0}})
    assert "calibrated x 1.1" in guessed.replanned["measured"]
    assert guessed.replanned["predicted_step_s"] == pytest.approx(0.55)


def test_the_train_phase_trains_the_head_then_the_replanned_last_stage(tmp_path, monkeypatch):
    """phase_train's glue, with the calibration and the trainer replaced by recorders: the
    first call trains every stage but the last, the second the whole config with the last
    stage re-sized from the first call's rate; a rerun resumes with the re-planned steps."""
    import time

    from secoustic_jax import demo_train
    from secoustic_jax.demo_plan import make_plan

    calls = []

    def fake_train(config, workdir, progress):
        steps = [config.stages[i].steps for i in config.enabled_stages]
        calls.append(steps)  # stage 2 "runs" 20 % slower than its calibration of 0.2 s,
        # after a 9-second compile that the rate must leave out
        return {"stages": {"semantic": {"steps_run": steps[1], "wall_time_s": 9.0 + 0.24 * steps[1],
                                        "steady_steps": steps[1] - 10,
                                        "steady_wall_s": 0.24 * (steps[1] - 10)}}}

    monkeypatch.setattr(demo_train, "train", fake_train)
    monkeypatch.setattr(demo_train, "_fill_feature_cache", lambda ctx: 0)
    monkeypatch.setattr(demo_train, "measure_step_costs", lambda cfg, steps, min_seconds: {
        "step_s": {"acoustic": 0.1, "semantic": 0.2, "finetune": 0.5}, "compile_s": {}})
    ctx = {"config": ROOT / "configs" / "tiny.py", "corpus": tmp_path / "corpus",
           "work": tmp_path / "work", "budget_s": 3600.0, "t0": time.time(), "sustained": 1.05,
           "plan": make_plan(3600.0, 1.0)}
    out = demo_train.phase_train(ctx)
    head, full = calls
    assert len(head) == 2 and full[:2] == head  # the head: stages 1-2 only
    assert out["steps"] == tuple(full) and out["replanned"]["planned"] != full[2]
    assert out["replanned"]["predicted_step_s"] == pytest.approx(0.6)  # 0.5 x 1.2
    calls.clear()
    ctx["plan"] = make_plan(3600.0, 1.0)
    again = demo_train.phase_train(ctx)  # a rerun: no second head call, the same steps
    assert calls == [full] and again["steps"] == tuple(full)


def test_plan_degrades_to_minimum_when_no_time_is_left():
    from secoustic_jax.demo_plan import EVAL_MIN, MIN_STEPS, plan_eval, plan_train

    assert plan_train(60, (0.1, 0.2, 0.3), 1.0) == (MIN_STEPS,) * 3
    assert plan_eval(60, 50.0) == EVAL_MIN
    small, big = plan_eval(600, 1.0), plan_eval(3600, 1.0)
    assert small.e1 <= big.e1 and small.e2_unseen <= big.e2_unseen
    with pytest.raises(ValueError, match="shares"):
        plan_train(3600, (0.1, 0.2), 1.0, shares=(1.0, 0.0))
    with pytest.raises(ValueError, match="shares"):
        plan_train(3600, (0.1, 0.2, 0.3), 1.0, shares=(0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        plan_train(3600, (0.0, 0.2, 0.3), 1.0)
    with pytest.raises(ValueError, match="sustained"):
        plan_train(3600, (0.1, 0.2, 0.3), 1.0, sustained=0.9)


def test_demo_refuses_a_sustained_step_below_one_before_doing_anything(tmp_path, capsys):
    from secoustic_jax import demo

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path / "demo"), "--sustained-step", "0.9"])
    assert exit_info.value.code == 2
    assert "--sustained-step must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before any folder was made


def test_corpus_size_reaches_the_plan_and_a_bad_one_is_refused_before_anything(tmp_path, capsys):
    from secoustic_jax import demo
    from secoustic_jax.demo_plan import CORPUS_SIZE, make_plan

    assert make_plan(3600, 1.0).corpus_size == CORPUS_SIZE
    assert make_plan(3600, 1.0, corpus_size="default").corpus_size == "default"
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path / "demo"), "--corpus-size", "two hours"])
    assert exit_info.value.code == 2
    assert "--corpus-size" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_train_overrides_make_a_valid_config(tmp_path):
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.demo_plan import make_plan, plan_train

    plan = make_plan(55 * 60, 1.0)
    with pytest.raises(ValueError, match="plan_train"):
        plan.train_overrides(tmp_path)
    for steps in [(60, 60, 60), (12000, 8000, 3000)]:
        plan.train_steps = steps
        cfg = load_experiment(ROOT / "configs" / "tiny.py", plan.train_overrides(tmp_path))
        assert tuple(cfg.stages[i].steps for i in range(3)) == steps
        assert cfg.loss.kl_ramp_start < cfg.loss.kl_ramp_end <= cfg.stages.semantic.steps
        assert 1 <= cfg.optim.warmup_steps <= min(200, steps[0])
        assert cfg.data.root == str(tmp_path) and cfg.enabled_stages == (0, 1, 2)
    plan.train_steps = plan_train(40 * 60, (0.1, 0.2, 0.3), 1.0)
    assert "to be measured" not in plan.describe()


def test_step_costs_are_measured_on_the_real_step():
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training.calibrate import measure_step_costs

    cfg = load_experiment(ROOT / "configs" / "tiny.py", [
        "data.kind=synthetic", "stages.acoustic.batch_size=2", "stages.semantic.batch_size=2",
        "stages.acoustic.segment_frames=32", "stages.semantic.segment_frames=32",
        "stages.finetune.batch_size=2", "stages.finetune.segment_frames=32"])
    got = measure_step_costs(cfg, steps=2)
    assert got["steps_timed"] == {"acoustic": 2, "semantic": 2, "finetune": 2}
    for name in ("acoustic", "semantic", "finetune"):
        # The first call compiles: it must be far dearer than a compiled step.
        assert 0 < got["step_s"][name] < got["compile_s"][name]
    # With a time floor, windows of 2 steps repeat until each stage was timed that long.
    floor = 1.5
    got = measure_step_costs(cfg, steps=2, min_seconds=floor)
    for name, n in got["steps_timed"].items():
        assert n % 2 == 0 and n > 2, (name, n)  # a 32-frame step takes far less than 0.75 s
        assert n * got["step_s"][name] >= floor * (1 - 1e-9)  # 1e-9: the division's rounding
    with pytest.raises(ValueError, match="min_seconds"):
        measure_step_costs(cfg, steps=2, min_seconds=-1)


@pytest.mark.slow  # every phase for real on the tiny corpus: ~5 min idle, 15+ loaded
def test_quick_demo_runs_every_phase(tmp_path):
    from secoustic_jax import demo

    assert demo.main(["--out", str(tmp_path / "demo"), "--quick", "--budget-min", "60"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["status"] == "ok" and list(summary["phases"]) == list(demo.PHASES)
    assert all(p["status"] == "ok" and p["wall_s"] > 0 for p in summary["phases"].values())
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "| DNSMOS" in md and "| E2 | original |" in md and "| 4-bit G |" in md
    for link in ("example/loss.png", "example/tokens_E2_token.png"):
        assert link in md and (tmp_path / "demo" / link).is_file()
    size = sum(f.stat().st_size for f in (tmp_path / "demo" / "example").iterdir())
    assert size < 2_000_000


def test_report_tables_show_mos_of_every_condition_and_bitrate_with_g():
    from secoustic_jax import demo_report
    from secoustic_jax.eval.codebook import total_bitrates

    agg = lambda v: {"mean": v, "n": 3, "failures": 0}  # noqa: E731
    mos = {f"dnsmos_{k}": agg(2.5) for k in ("sig", "bak", "ovrl", "p808")}
    book = total_bitrates(4, 512, 32, [3.0, 5.0])
    summary = {"E2": {c: {"metrics": dict(mos)} for c in ("original", "voc", "token", "vc")}}
    summary["E2"]["token"]["codebook"] = book
    rows = [r for r in demo_report.mos_table(summary) if r.startswith("| E2 |")]
    assert [r.split(" | ")[1] for r in rows] == ["original", "voc", "token", "vc"]
    bits = demo_report.bitrate_table(summary)
    f32 = next(r for r in bits if r.startswith("| float32 G"))
    # 21.5 Hz tokens (273 bit/s) + 16 384 bits over 10 s = 1.91 kbps.
    assert "| 16384 |" in f32 and "| 1.91 |" in f32
    assert any(r.startswith("| 4-bit G | 2064 |") for r in bits)


def test_bars_say_met_or_by_how_much_missed():
    from secoustic_jax import demo_report

    agg = lambda v: {"mean": v, "n": 3, "failures": 0}  # noqa: E731
    summary = {"E2": {"acoustic": {"metrics": {"stoi": agg(0.95), "pesq_wb": agg(1.5)},
                                   "corpus": {"wer": 0.4}},
                      "token": {"metrics": {"stoi": agg(0.7)}, "corpus": {"wer": 0.2}},
                      "voc": {"metrics": {"stoi": agg(0.96), "pesq_wb": agg(2.9)}, "corpus": {"wer": 0.1}}}}
    rows = {r.split(" | ")[0][2:]: r for r in demo_report.bars_table(summary) if r.startswith("| acoustic")
            or r.startswith("| token")}
    assert rows["acoustic STOI >= 0.9"].endswith("| met |")
    assert rows["acoustic WB-PESQ >= 1.8"].endswith("| missed by 0.300 |")
    assert rows["acoustic WER <= 0.3"].endswith("| missed by 0.100 |")
    assert rows["token STOI >= 0.8"].endswith("| missed by 0.100 |")
    assert rows["token WER <= 0.5"].endswith("| met |")


def test_a_run_of_another_recipe_is_moved_aside_not_resumed(tmp_path, capsys):
    """`make demo` after a config change: the old run is kept aside and training restarts
    (resuming it would stop on the checkpoint's config check)."""
    from secoustic_jax.demo_train import saved_plan

    wd = tmp_path / "train"
    wd.mkdir()
    plan = {"steps": [10, 20, 30], "step_costs": [0.1, 0.2, 0.3], "recipe": "A"}
    (wd / "plan_steps.json").write_text(json.dumps(plan))
    (wd / "checkpoint").write_text("kept")
    assert saved_plan(wd, "A") == plan and wd.is_dir()  # same recipe: resumed as planned
    assert saved_plan(wd, "B") is None and not wd.exists()
    moved = list(tmp_path.glob("train.superseded-*"))
    assert len(moved) == 1 and (moved[0] / "checkpoint").read_text() == "kept"
    assert "another config" in capsys.readouterr().out
    assert saved_plan(tmp_path / "never", "A") is None  # nothing there: a fresh plan


def test_the_report_states_the_replan_of_the_last_stage():
    from secoustic_jax.demo_report import _replan_note

    note = _replan_note({"stage": "finetune", "planned": 300, "steps": 420,
                         "predicted_step_s": 0.4512, "measured": "semantic: 200 steps at 0.180 s"})
    assert "finetune stage sized again" in note and "300 -> 420 steps" in note
    assert "0.451 s predicted" in note
    assert _replan_note(None) == "" and _replan_note({"kept": "planned before"}) == ""


def test_the_evaluation_estimate_counts_codec_passes_and_scored_outputs():
    from secoustic_jax.demo_plan import (COST, E1_SECONDS, E2_SECONDS, EVAL_MAX, EVAL_MIN,
                                         SCORED_CONDITIONS, EvalSizes, eval_fixed, plan_eval,
                                         set_seconds)

    job = lambda mean_s: COST["score_job"] + mean_s * COST["score_per_audio_s"]  # noqa: E731
    assert set_seconds(0, E2_SECONDS, vc_pairs=5) == 0.0  # an empty set runs nothing
    # Each utterance adds its codec share and 1 + SCORED_CONDITIONS scored outputs
    # (reference, voc, acoustic, token); each VC pair one more output.
    step = set_seconds(5, E1_SECONDS) - set_seconds(4, E1_SECONDS)
    assert step == pytest.approx(COST["codec_per_utt"] + (1 + SCORED_CONDITIONS) * job(E1_SECONDS))
    assert set_seconds(4, E2_SECONDS, 3) - set_seconds(4, E2_SECONDS) == pytest.approx(3 * job(E2_SECONDS))
    # A set pays its compiles once, however small: two sets of 6 cost more than one of 12.
    assert 2 * set_seconds(6, E1_SECONDS) == pytest.approx(set_seconds(12, E1_SECONDS) + COST["codec_set"])
    sizes = EvalSizes(e2_unseen=5, e2_per_speaker=3, e1=7, vc_pairs=9)
    assert sizes.seconds(speakers=7) == pytest.approx(
        set_seconds(5, E2_SECONDS) + set_seconds(21, E2_SECONDS, 9) + set_seconds(7, E1_SECONDS))
    # The sizes chosen after training never exceed the time left by the estimate.
    for left in range(int(eval_fixed() + EVAL_MIN.seconds()) + 1, int(eval_fixed() + EVAL_MAX.seconds()) + 200, 37):
        chosen = plan_eval(float(left), 1.0)
        assert eval_fixed() + chosen.seconds() <= left
        assert all(getattr(EVAL_MIN, f) <= getattr(chosen, f) <= getattr(EVAL_MAX, f)
                   for f in ("e2_unseen", "e2_per_speaker", "e1", "vc_pairs"))
    assert plan_eval(eval_fixed() + EVAL_MAX.seconds(), 1.0) == EVAL_MAX
