"""Time budget of `make demo`: how many training steps and evaluation utterances fit.

Costs are in *idle-machine seconds* on the 2-core CPU kind this project targets, measured
with the code as it is (docs/demo.md gives the measurements). A shared machine runs
everything slower: at start-up a single-threaded probe measures wall / CPU time (1.0 on
idle cores, ~7 with seven busy jobs per core), `slowdown` turns that into the expected
multiplier, and every cost is multiplied by it. Training gets what the fixed phases and a minimum evaluation leave;
the evaluation is sized again after training from the time actually left.
"""

from __future__ import annotations

import dataclasses
import time

# Idle 2-core costs (seconds). See docs/demo.md "Sizing" for how they were measured.
COST = {
    "setup": 15.0,
    "corpus": 80.0,  # size 50: 412 utterances, ~1.6 CPU-min on 2 processes (docs/data.md §3)
    "asterisk": 40.0,  # decode 568 G.722 files, write WAVs
    "train_compile": 100.0,  # both stages: XLA compile of the train + eval steps
    "train_validation": 30.0,  # end-of-stage validation + Griffin-Lim media, both stages
    "train_step": (0.26, 0.35),  # acoustic, semantic stage step (batch 8 x 128 frames)
    "eval_fixed": 150.0,  # codec compiles, worker start-up, models, plots
    "timing": 45.0,  # RTF (Griffin-Lim on 10 s x 6 calls) + streaming 450 steps
    "eval_per_audio_s": 1.05,  # voc+acoustic+token + reference, 2 scoring workers, per input second
    "vc_per_audio_s": 0.35,
    "report": 20.0,
}
NOMINAL_STEPS = (400, 400)  # configs/tiny.py
CORPUS_SIZE = "50"  # utterances per WER voice: ~0.5 h, 5 test utterances per voice, 12 held-out
MAX_STEP_SCALE = 4.0  # never more than 4x the nominal schedule
MIN_STEPS = 60
E2_SECONDS, E1_SECONDS = 6.5, 3.6  # mean utterance durations (E2 corpus test split, E1-1s)


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
    import os

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
        audio = (self.e2_unseen + self.e2_per_speaker * speakers) * E2_SECONDS + self.e1 * E1_SECONDS
        return audio * COST["eval_per_audio_s"] + self.vc_pairs * E2_SECONDS * COST["vc_per_audio_s"]


EVAL_MIN = EvalSizes(e2_unseen=4, e2_per_speaker=2, e1=12, vc_pairs=7)
EVAL_MAX = EvalSizes(e2_unseen=12, e2_per_speaker=4, e1=60, vc_pairs=21)


def plan_eval(seconds_left: float, factor: float) -> EvalSizes:
    """Largest sizes between EVAL_MIN and EVAL_MAX whose estimated cost fits."""
    budget = seconds_left / factor - COST["eval_fixed"] - COST["timing"] - COST["report"]
    lo, hi = EVAL_MIN.seconds(), EVAL_MAX.seconds()
    x = 0.0 if budget <= lo else min(1.0, (budget - lo) / (hi - lo))
    mix = lambda a, b: int(a + x * (b - a))  # floor: never above the estimate  # noqa: E731
    return EvalSizes(mix(EVAL_MIN.e2_unseen, EVAL_MAX.e2_unseen),
                     mix(EVAL_MIN.e2_per_speaker, EVAL_MAX.e2_per_speaker),
                     mix(EVAL_MIN.e1, EVAL_MAX.e1), mix(EVAL_MIN.vc_pairs, EVAL_MAX.vc_pairs))


@dataclasses.dataclass
class Plan:
    budget_s: float
    factor: float
    corpus_size: str
    train_steps: tuple[int, int]
    eval_sizes: EvalSizes
    quick: bool = False

    def train_overrides(self, corpus_dir) -> list[str]:
        """Dotted overrides of configs/tiny.py: data, steps, and the step-scaled schedule
        (KL ramp at 37.5-62.5 % of stage 2, warm-up 10 % capped at 40, as in tiny.py)."""
        s1, s2 = self.train_steps
        every = max(10, min(s1, s2) // 2)
        start, end = f"loss.kl_ramp_start={int(0.375 * s2)}", f"loss.kl_ramp_end={int(0.625 * s2)}"
        # Overrides apply one at a time and each must validate (start <= end): move the end
        # first when it stays above tiny.py's start (150), else the start first.
        ramp = [end, start] if int(0.625 * s2) >= 150 else [start, end]
        return [f"data.root={corpus_dir}", f"stages.acoustic.steps={s1}",
                f"stages.semantic.steps={s2}", *ramp, f"optim.warmup_steps={min(40, s1 // 10)}",
                f"checkpoint.every_steps={every}", "log.every_steps=10"]

    def describe(self) -> str:
        e = self.eval_sizes
        return (f"corpus {self.corpus_size}, train steps {self.train_steps[0]} + {self.train_steps[1]}, "
                f"eval E2-unseen {e.e2_unseen}, E2 {e.e2_per_speaker}/speaker, E1 {e.e1}, "
                f"VC pairs {e.vc_pairs} (budget {self.budget_s / 60:.0f} min, contention x{self.factor:.2f})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_plan(budget_s: float, factor: float, quick: bool = False) -> Plan:
    """Splits the budget: fixed phases and the minimum evaluation first, then training
    steps (up to MAX_STEP_SCALE x nominal); the evaluation grows into what is left."""
    if quick:  # smoke runs: tiny corpus, a few steps, minimal evaluation
        return Plan(budget_s, factor, "tiny", (MIN_STEPS // 3, MIN_STEPS // 3),
                    EvalSizes(2, 2, 4, 2), quick=True)
    before_eval = sum(COST[k] for k in ("setup", "corpus", "asterisk", "train_compile",
                                        "train_validation"))
    after_train = COST["eval_fixed"] + COST["timing"] + COST["report"]
    train_s = budget_s / factor - before_eval - after_train - EVAL_MIN.seconds()
    per_pair = COST["train_step"][0] * NOMINAL_STEPS[0] + COST["train_step"][1] * NOMINAL_STEPS[1]
    scale = min(MAX_STEP_SCALE, max(train_s, 0.0) / per_pair)
    steps = tuple(max(MIN_STEPS, int(scale * n) // 10 * 10) for n in NOMINAL_STEPS)
    spent = before_eval + COST["train_step"][0] * steps[0] + COST["train_step"][1] * steps[1]
    return Plan(budget_s, factor, CORPUS_SIZE, steps, plan_eval(budget_s - spent * factor, factor))
