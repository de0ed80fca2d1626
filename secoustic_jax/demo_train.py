"""The demo's train phase: time each stage's step, size the steps to the budget, train every
stage but the last, size the last again from how fast the earlier ones really ran, train it.

Why two calls: the 12 calibration steps of each stage have been 10 % slower to 27 % faster
than the whole stage that followed (docs/demo.md), so a plan made once at the start either
leaves minutes of the budget unused or eats into the evaluation. The checkpoint written at
the end of the next-to-last stage lets the second call resume with the last stage's length
changed: a stage that has not started has left nothing in a checkpoint
(training/checkpoint.py `unstarted_stage_fields`).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax

from secoustic_jax.config.base import to_dict
from secoustic_jax.config.train import load_experiment
from secoustic_jax.data.features import fill_cache
from secoustic_jax.data.manifest import audio_path, load_manifest
from secoustic_jax.demo_plan import (CALIBRATION_S, STAGES, DemoError, Plan, data_overrides,
                                     plan_train, replan_last)
from secoustic_jax.training.calibrate import measure_step_costs
from secoustic_jax.training.loop import train

# Fewer steps of the next-to-last stage than this in the current call, past its first log
# window (a resume near its end, a very short stage), do not measure its rate: the last
# stage then keeps the `--sustained-step` estimate.
MIN_MEASURED_STEPS = 50


def phase_train(ctx: dict) -> dict:
    """Plans, trains every enabled stage (re-planning the last), -> the phase's record."""
    plan: Plan = ctx["plan"]
    workdir = ctx["work"] / "train"
    if not plan.quick:
        _plan_steps(ctx, plan, workdir)
    config = load_experiment(ctx["config"], plan.train_overrides(ctx["corpus"]))
    stages, ran = config.enabled_stages, {}
    if not plan.quick and len(stages) > 1 and plan.replanned is None:
        last = config.stages[stages[-1]].name
        head = load_experiment(ctx["config"], [*plan.train_overrides(ctx["corpus"]),
                                               f"stages.{last}.enabled=false"])
        ran = _train(head, workdir)["stages"]
        _replan(ctx, plan, workdir, config.stages[stages[-2]].name, ran)
        config = load_experiment(ctx["config"], plan.train_overrides(ctx["corpus"]))
    summary = _train(config, workdir)
    ctx["workdir"] = workdir
    return {"workdir": str(workdir), "stages": [config.stages[i].name for i in stages],
            "steps": plan.train_steps, "step_costs_s": plan.step_costs,
            "replanned": plan.replanned, "last_checkpoint": summary.get("last_checkpoint"),
            "stage_summaries": {**ran, **summary.get("stages", {})}}


def _train(config, workdir: pathlib.Path) -> dict:
    print(f"  {config.name}: stages {[config.stages[i].name for i in config.enabled_stages]}, "
          f"steps {[config.stages[i].steps for i in config.enabled_stages]}, workdir {workdir}",
          flush=True)
    summary = train(config, workdir, progress=True)
    if summary.get("preempted"):
        raise DemoError(f"training stopped early: {summary}")
    return summary


def _replan(ctx: dict, plan: Plan, workdir: pathlib.Path, before: str, ran: dict) -> None:
    """Sizes the last stage from the time left and the measured rate of stage `before`
    (the one just trained); records the outcome in plan_steps.json, so a resumed demo
    keeps it."""
    i = STAGES.index(before)
    done = ran.get(before, {})
    left = ctx["budget_s"] - (time.time() - ctx["t0"])
    # The steps after the stage's first log window: its compile (0.6 s per step over a
    # 60-step stage of the 14-minute demo) is not part of the rate the last stage will run at.
    if done.get("steady_steps", 0) >= MIN_MEASURED_STEPS:
        wall = done["steady_wall_s"] / done["steady_steps"]
        source = f"{before}: {done['steady_steps']} steps after its first log window at {wall:.3f} s"
    else:  # finished before this call: the planning estimate stands in for a measurement
        wall = plan.step_costs[i] * ctx["sustained"]
        source = f"{before} not run in this call: calibrated x {ctx['sustained']}"
    steps, cost = replan_last(left, plan.step_costs, (i, wall), plan.factor,
                              probe_utts=plan.probe_utts)
    old = plan.train_steps[-1]
    plan.train_steps = (*plan.train_steps[:-1], steps)
    plan.replanned = {"stage": STAGES[-1], "planned": old, "steps": steps,
                      "predicted_step_s": round(cost, 4), "measured": source,
                      "minutes_left": round(left / 60, 2)}
    saved = workdir / "plan_steps.json"
    got = json.loads(saved.read_text())
    saved.write_text(json.dumps(dict(got, steps=plan.train_steps, replanned=plan.replanned)) + "\n")
    print(f"  re-planned {STAGES[-1]}: {old} -> {steps} steps ({source} per step, "
          f"predicted {cost:.3f} s; {left / 60:.1f} min left)", flush=True)


def _plan_steps(ctx: dict, plan: Plan, workdir: pathlib.Path) -> None:
    """Times each stage's step here and now, then sizes the steps to the time left. A
    resumed run keeps the steps of its first plan (its checkpoints record the config); a
    run of another recipe (the config file changed since) is moved aside, not resumed."""
    probe = load_experiment(ctx["config"], [
        *data_overrides(ctx["corpus"]), *(f"stages.{n}.enabled=true" for n in STAGES)])
    recipe = json.dumps(to_dict(probe), sort_keys=True, default=str)
    saved = workdir / "plan_steps.json"
    got = saved_plan(workdir, recipe)
    if got is not None:
        plan.train_steps, plan.step_costs = tuple(got["steps"]), tuple(got["step_costs"])
        # A plan saved before re-planning existed trained its last stage as first planned.
        plan.replanned = got.get("replanned", {"kept": "planned before re-planning existed"})
        print(f"  resuming with the earlier plan: steps {plan.train_steps}", flush=True)
        return
    # The first pass over the corpus computes its mel cache: done here, not inside the
    # timed steps, it would otherwise double stage 1's measured cost (the first measured).
    t = time.time()
    frames = _fill_feature_cache(ctx)
    print(f"  mel cache: {frames} frames ready in {time.time() - t:.0f} s", flush=True)
    # Compiles of the calibration are cached on disk, so training does not pay them twice.
    jax.config.update("jax_compilation_cache_dir", str(ctx["work"] / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    t = time.time()
    costs = measure_step_costs(probe, steps=12, min_seconds=CALIBRATION_S)
    step_costs = tuple(costs["step_s"][n] for n in STAGES)
    left = ctx["budget_s"] - (time.time() - ctx["t0"])
    plan.train_steps = plan_train(left, step_costs, plan.factor, sustained=ctx["sustained"],
                                  probe_utts=plan.probe_utts)
    plan.step_costs = step_costs
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"steps": plan.train_steps, "step_costs": step_costs,
                                 "calibration": costs, "recipe": recipe,
                                 "replanned": None}) + "\n")
    print(f"  measured {' / '.join(f'{c:.3f}' for c in step_costs)} s per step (stages "
          f"{' / '.join(STAGES)}, compiles {sum(costs['compile_s'].values()):.0f} s, took "
          f"{time.time() - t:.0f} s); {left / 60:.1f} min left -> steps "
          f"{' + '.join(map(str, plan.train_steps))}", flush=True)


def saved_plan(workdir: pathlib.Path, recipe: str) -> dict | None:
    """The plan a run in `workdir` was started with, if it trained this `recipe` (the
    config as JSON). A run of another recipe is moved aside to
    `<workdir>.superseded-<time>` (kept, not resumed) and None returned."""
    saved = workdir / "plan_steps.json"
    if not workdir.exists():
        return None
    if saved.is_file():
        got = json.loads(saved.read_text())
        if got.get("recipe") == recipe:
            return got
    old = workdir.with_name(f"{workdir.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
    workdir.rename(old)
    print(f"  {workdir} holds a run of another config: moved to {old}; training anew",
          flush=True)
    return None


def _fill_feature_cache(ctx: dict) -> int:
    """Mel cache of every utterance of the corpus's train and valid splits."""
    corpus = pathlib.Path(ctx["corpus"])
    files = [audio_path(r) for split in ("train", "valid")
             for r in load_manifest(corpus / f"{split}.jsonl")[0]]
    mel = load_experiment(ctx["config"]).codec.mel  # the cache key's settings
    return fill_cache(files, mel, corpus / "features", workers=2)
