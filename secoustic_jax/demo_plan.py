"""Time budget of `make demo`: how many training steps and evaluation utterances fit.

Training steps are sized from *measured* costs: the train phase first times a few steps of
each stage on this machine, input pipeline included (training/calibrate.py), then
`plan_train` fills the time left minus the evaluation reserve, split between the stages
by `STAGE_TIME_SHARES`. The phases around training use the idle-machine estimates of
COST (docs/demo.md "Sizing"), multiplied by the expected slowdown that a single-threaded
probe reads at start-up on a shared machine (1.0 on idle cores). The evaluation is sized
again after training from the time actually left.
"""

from __future__ import annotations

import dataclasses
import os
import time

from secoustic_jax.eval.evaluate import CONDITIONS


class DemoError(RuntimeError):
    """A phase failed; the message names it and the reason."""


# Idle 2-core costs (seconds) of the phases around training. See docs/demo.md "Sizing".
# Training itself is not in this table: its step costs are measured at the start of the
# train phase (training/calibrate.py) on this machine, input pipeline included.
COST = {
    "setup": 15.0,
    "corpus": 80.0,  # size 50: 412 utterances, ~1.6 CPU-min on 2 processes (docs/data.md §3)
    "asterisk": 40.0,  # decode 568 G.722 files, write WAVs
    "train_compile": 60.0,  # both stages, with the calibration's compiles in the cache
    "train_validation": 30.0,  # end-of-stage validation + Griffin-Lim media, both stages
    "stats": 10.0,  # data-dependent init: per-bin mel statistics from training batches
    "eval_fixed": 60.0,  # evaluator start-up: codec load, scoring workers, models, plots
    "timing": 45.0,  # RTF (Griffin-Lim on 10 s x 6 calls) + streaming 450 steps
    # The evaluation's sets, 2 scoring workers, fitted to the per-set progress bars of the
    # 2026-12-07 demos on the AVX2 host (docs/demo.md "Sizing"). Until then one rate
    # per second of test audio (1.30 s), which the E1 prompts (3.6 s, but a fixed cost per
    # scored utterance) and the length-bucket compiles of the codec passes outran by 5 min.
    "codec_set": 25.0,  # a test set's codec pass: its length buckets compile
    "codec_per_utt": 1.1,
    "score_job": 1.2,  # one scored output (reference, voc, acoustic, token, or a VC pair)
    "score_per_audio_s": 0.27,
    # Speaker probes on every corpus utterance, per utterance: 123 s for 412 in the
    # 2026-12-07 21.5 Hz reproduction, a fresh corpus (speaker embeddings computed; 44 s
    # with them cached). 60 s in all until then, short by ~1 min on a fresh corpus.
    "probe_per_utt": 0.30,
    "report": 20.0,
}
PROBE_UTTS = 412  # utterances of the demo corpus (CORPUS_SIZE), which the probes read
# Shares of the training time of stages 1, 2 and 3 (finetune). From the PCA init
# (configs/tiny.py) stage 1 is within 0.001 of its PCA-64 bound after ~1000 steps
# (docs/training.md), so most of the time goes to the token path, and more of it to
# stage 3: the stage-2 A/B showed the token path gaining more from finetune steps (mel on
# D(A-hat), every module) than from more stage-2 steps.
STAGE_TIME_SHARES = (0.15, 0.35, 0.5)
# Sustained steps run slower than the 12 calibration steps (logging, checkpoints, a warmer
# machine): the 2026-12-06 demo's last-window step times were 0.211 / 0.182 / 0.470 s
# against calibrated 0.202 / 0.172 / 0.451 (+4.5 / +5.8 / +4.2 %), and training overran
# its plan by ~2 min. Measured costs are scaled by this before sizing the steps.
SUSTAINED_STEP = 1.05
STAGES = ("acoustic", "semantic", "finetune")
MIN_STEPS = 60
# Seconds of timed steps per stage at calibration (windows of 12 steps until reached): one
# 12-step window of the tiny finetune step (~9 s) read 0.73-1.02 s per step on a VM whose
# speed wanders; 20 s averages 2-3 such windows for ~50 s more calibration in all.
CALIBRATION_S = 20.0
CORPUS_SIZE = "50"  # utterances per WER voice: 1.0 h, 5 test utterances per voice, 12 held-out
E2_SECONDS, E1_SECONDS = 6.5, 3.6  # mean utterance durations (E2 corpus test split, E1-1s)
SCORED_CONDITIONS = len(CONDITIONS)  # outputs scored per utterance besides its reference


# The single-thread probe overstates the slowdown of the demo's (partly multi-threaded,
# partly I/O-bound) work about twofold: on a machine where it read 7.35, training and
# evaluation ran 1.9x and 2.1x slower than the idle costs below predict x 7.35.
PROBE_TO_SLOWDOWN = 0.5


def slowdown(probe_factor: float) -> float:
    """Expected wall-time multiplier of the demo's phases for a probe reading."""
    return max(1.0, probe_factor * PROBE_TO_SLOWDOWN)


def contention_factor(work: int = 300_000) -> float:
    """max(wall / CPU seconds of a fixed single-threaded pure-Python loop, 5-minute load
    average per core), >= 1. The probe sees the cores right now; the load average keeps a
    lull of a few seconds on a busy shared machine from passing for an idle one."""
    return max(_probe(work), os.getloadavg()[1] / (os.cpu_count() or 1))


def _probe(work: int) -> float:
    """wall / CPU seconds of a fixed single-threaded pure-Python loop (>= 1)."""
    def probe():
        acc = 0
        for i in range(work):
            acc += i * i % 7
        return acc

    probe()
    walls, cpus = [], []
    for _ in range(3):
        w, c = time.perf_counter(), time.process_time()
        probe()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return max(1.0, sum(walls) / max(sum(cpus), 1e-9))


@dataclasses.dataclass
class EvalSizes:
    """Utterances per test set and VC pairs."""

    e2_unseen: int
    e2_per_speaker: int
    e1: int
    vc_pairs: int

    def seconds(self, speakers: int = 7) -> float:
        """Idle wall seconds of the codec passes and the scoring of these sizes."""
        return (set_seconds(self.e2_unseen, E2_SECONDS)
                + set_seconds(self.e2_per_speaker * speakers, E2_SECONDS, self.vc_pairs)
                + set_seconds(self.e1, E1_SECONDS))


def set_seconds(utterances: int, mean_s: float, vc_pairs: int = 0) -> float:
    """Idle wall seconds of one test set: the codec pass, then a scoring job for every
    utterance's reference and each of its SCORED_CONDITIONS, and one per VC pair (a
    source utterance of the same mean length)."""
    if utterances <= 0:
        return 0.0
    jobs = utterances * (1 + SCORED_CONDITIONS) + vc_pairs
    return (COST["codec_set"] + utterances * COST["codec_per_utt"]
            + jobs * (COST["score_job"] + mean_s * COST["score_per_audio_s"]))


def eval_fixed(probe_utts: int = PROBE_UTTS) -> float:
    """Idle seconds of the evaluation that do not scale with the test sets' sizes."""
    return (COST["eval_fixed"] + probe_utts * COST["probe_per_utt"] + COST["timing"]
            + COST["report"])


EVAL_MIN = EvalSizes(e2_unseen=4, e2_per_speaker=2, e1=8, vc_pairs=7)
# E1 (real prompts, out of domain; no bar) at most 24 prompts: a scored output costs ~2 s
# however short the prompt, so 60 of them took 9.0 min on the AVX2 host (b65a78a; both E2
# sets together: 8.6 min) where the old per-audio-second rate had reserved 4.7.
EVAL_MAX = EvalSizes(e2_unseen=12, e2_per_speaker=4, e1=24, vc_pairs=21)


def plan_eval(seconds_left: float, factor: float, probe_utts: int = PROBE_UTTS) -> EvalSizes:
    """Largest sizes between EVAL_MIN and EVAL_MAX whose estimated cost fits."""
    budget = seconds_left / factor - eval_fixed(probe_utts)
    lo, hi = EVAL_MIN.seconds(), EVAL_MAX.seconds()
    x = 0.0 if budget <= lo else min(1.0, (budget - lo) / (hi - lo))
    # floor: never above the estimate (1e-9: float rounding of x = 1 must not drop a size)
    mix = lambda a, b: int(a + x * (b - a) + 1e-9)  # noqa: E731
    return EvalSizes(mix(EVAL_MIN.e2_unseen, EVAL_MAX.e2_unseen),
                     mix(EVAL_MIN.e2_per_speaker, EVAL_MAX.e2_per_speaker),
                     mix(EVAL_MIN.e1, EVAL_MAX.e1), mix(EVAL_MIN.vc_pairs, EVAL_MAX.vc_pairs))


@dataclasses.dataclass
class Plan:
    """What the demo will do. train_steps is None until the train phase has measured the
    step costs (`plan_train`)."""

    budget_s: float
    factor: float
    corpus_size: str
    eval_sizes: EvalSizes
    probe_utts: int = PROBE_UTTS  # corpus utterances the disentanglement probes will read
    train_steps: tuple[int, ...] | None = None  # per stage of STAGES
    step_costs: tuple[float, ...] | None = None  # measured wall s/step, per stage
    quick: bool = False
    # After the earlier stages: how the last stage was sized again (`replan_last`); None
    # until then, {"kept": reason} when it was not.
    replanned: dict | None = None

    def train_overrides(self, corpus_dir) -> list[str]:
        """Dotted overrides of configs/tiny.py: data, steps, and the step-scaled schedule
        (KL ramp at 37.5-62.5 % of stage 2, warm-up 5 % of stage 1 capped at 200)."""
        if self.train_steps is None:
            raise ValueError("Plan.train_overrides: plan_train has not set the steps yet")
        steps = dict(zip(STAGES, self.train_steps))
        s1, s2 = steps["acoustic"], steps["semantic"]
        every = max(10, min(v for v in steps.values() if v) // 2)
        start, end = f"loss.kl_ramp_start={int(0.375 * s2)}", f"loss.kl_ramp_end={int(0.625 * s2)}"
        per_stage = [o for name in STAGES for o in (
            f"stages.{name}.enabled={str(steps.get(name, 0) > 0).lower()}",
            f"stages.{name}.steps={steps.get(name, 0)}")]
        return [*data_overrides(corpus_dir), *per_stage, "loss.kl_ramp_end=1000000000", start,
                end, f"optim.warmup_steps={min(200, max(1, s1 // 20))}",
                f"checkpoint.every_steps={every}", "log.every_steps=10"]

    def describe(self) -> str:
        e = self.eval_sizes
        steps = ("to be measured" if self.train_steps is None
                 else " + ".join(str(n) for n in self.train_steps))
        return (f"corpus {self.corpus_size}, train steps {steps}, "
                f"eval E2-unseen {e.e2_unseen}, E2 {e.e2_per_speaker}/speaker, E1 {e.e1}, "
                f"VC pairs {e.vc_pairs} (budget {self.budget_s / 60:.0f} min, contention x{self.factor:.2f})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def data_overrides(corpus_dir) -> list[str]:
    """The corpus and its full-utterance mel cache (the host front end would otherwise
    run on every utterance of every batch: ~10x the step's own cost at tiny scale)."""
    return [f"data.root={corpus_dir}", f"data.pipeline.feature_cache={corpus_dir}/features"]


def eval_reserve(factor: float, sizes: EvalSizes = EVAL_MAX, probe_utts: int = PROBE_UTTS) -> float:
    """Wall seconds to keep for evaluation and the report after training."""
    return factor * (eval_fixed(probe_utts) + sizes.seconds())


def make_plan(budget_s: float, factor: float, quick: bool = False,
              corpus_size: str = CORPUS_SIZE) -> Plan:
    """The plan before any measurement: corpus size (`CorpusConfig.size`) and the
    evaluation sizes that fit next to a minimal training; the steps come later from
    `plan_train`."""
    if quick:  # smoke runs: tiny corpus, a few steps, minimal evaluation
        return Plan(budget_s, factor, "tiny", EvalSizes(2, 2, 4, 2),
                    train_steps=(MIN_STEPS // 3,) * len(STAGES), quick=True)
    return Plan(budget_s, factor, corpus_size, EVAL_MAX)


def plan_train(seconds_left: float, step_costs: tuple[float, ...], factor: float,
               shares: tuple[float, ...] = STAGE_TIME_SHARES,
               sustained: float = SUSTAINED_STEP, probe_utts: int = PROBE_UTTS) -> tuple[int, ...]:
    """Steps per stage that fill `seconds_left` (the budget still unspent at the start of
    training) minus the compile, validation and evaluation reserves.

    step_costs are *measured* wall seconds per step on this machine right now, one per
    stage, so they are not multiplied by the contention factor (only by SUSTAINED_STEP,
    the measured gap between calibration and sustained steps, or `sustained` for runs that
    assume their own); the fixed reserves (estimates) are. Stage i gets shares[i] of the
    time; no cap: a faster machine trains longer.
    """
    if len(shares) != len(step_costs) or min(shares) <= 0 or abs(sum(shares) - 1) > 1e-9:
        raise ValueError(f"plan_train: shares must be {len(step_costs)} positive numbers "
                         f"summing to 1, got {shares}")
    if min(step_costs) <= 0:
        raise ValueError(f"plan_train: step costs must be positive, got {step_costs}")
    if sustained < 1:
        # Stages have also run faster than their calibration (docs/demo.md), but planning
        # more steps than the calibration says fit would risk the evaluation's share.
        raise ValueError(f"plan_train: sustained must be >= 1 (never plan more steps than the "
                         f"calibration says fit), got sustained={sustained}")
    fixed = factor * (COST["train_compile"] + COST["train_validation"] + COST["stats"])
    train_s = max(seconds_left - fixed - eval_reserve(factor, probe_utts=probe_utts), 0.0)
    return tuple(max(MIN_STEPS, int(f * train_s / (c * sustained)) // 10 * 10)
                 for f, c in zip(shares, step_costs))


def replan_last(seconds_left: float, calibrated: tuple[float, ...], measured: tuple[float, float],
                factor: float, probe_utts: int = PROBE_UTTS) -> tuple[int, float]:
    """Steps of the last stage, sized again when every earlier stage has finished.

    calibrated: the start-up step costs (s), one per stage; measured: (index, wall s per
    step) of the stage that ran last, over the whole stage (compile, logging, checkpoints,
    validation windows included). The last stage's step is predicted as its calibrated cost
    times the measured/calibrated ratio of that stage: the same machine, the same minutes,
    a gap of -10 % to +27 % between calibration and whole stages in the `small` runs
    (docs/demo.md), which a constant cannot absorb. -> (steps, predicted s per step).
    """
    idx, wall = measured
    if wall <= 0 or min(calibrated) <= 0:
        raise ValueError(f"replan_last: step costs must be positive, got measured {wall}, "
                         f"calibrated {calibrated}")
    cost = calibrated[-1] * wall / calibrated[idx]
    # The last stage's share of the compile and validation reserves of plan_train.
    fixed = factor * (COST["train_compile"] + COST["train_validation"]) / len(calibrated)
    train_s = max(seconds_left - fixed - eval_reserve(factor, probe_utts=probe_utts), 0.0)
    return max(MIN_STEPS, int(train_s / cost) // 10 * 10), cost
