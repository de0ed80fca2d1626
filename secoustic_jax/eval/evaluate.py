"""The evaluator shared by `eval.py`, the demo and the training loop (evaluation.md).

    from secoustic_jax.eval.evaluate import EvalOptions, evaluate
    from secoustic_jax.eval.testset import from_manifest
    sets = [from_manifest("cache/corpus/test.jsonl", "E2")]
    result = evaluate(codec, load_vocoder("griffin-lim"), sets, "reports/x", EvalOptions())

Per test set: the codec runs batched and jitted (`codec_run`); each utterance is scored
under the conditions `voc` (vocoder alone: the ceiling), `acoustic` (stage-1 path) and
`token` (the codec), so the codec's own loss is visible apart from the vocoder's; on a
multi-speaker set also `vc` (§5) and the linear probes (§6). Codebook statistics pool
the tokens of the whole set. Scoring (vocoding, PESQ/STOI/LSD, Whisper, resemblyzer)
runs in order in-process or over a spawned process pool (`workers`), with identical
numbers either way. The timing section (§4.9-4.10) is measured last, after the pool
is closed, and is the only part of report.json that is not bit-reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Sequence

import jax
import numpy as np
from tqdm import tqdm

from secoustic_jax.eval import asr, codec_run, dnsmos, report, scoring, speaker, vc as vcmod
from secoustic_jax.eval.assemble import SetResult, assemble_set, write_outputs
from secoustic_jax.eval.timing import timing_section
from secoustic_jax.precision import Precision
from secoustic_jax.quantizer.g_quant import G_BITS

CONDITIONS = ("voc", "acoustic", "token")


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What to run. `vc_sources`: K source utterances per ordered speaker pair (§5);
    `vc_max_pairs`: cap on speaker pairs (taken in rounds, see vc.plan_vc)."""

    conditions: tuple[str, ...] = CONDITIONS
    asr: bool = True
    sim: bool = True
    mos: bool = True  # DNSMOS of every condition and of the original (eval/dnsmos.py)
    g_bits: int = 32  # precision G is transmitted at (quantizer/g_quant.py; 32 = float32)
    vc: bool = True
    probe: bool = True
    vc_sources: int = 10
    vc_max_pairs: int | None = None
    seed: int = 0
    max_batch: int = 8
    max_frames: int = 16384
    workers: int = 0
    audio_samples: int = 1  # utterances per set written as audio (all conditions)
    timing: bool = True
    timing_repeats: int = 5
    progress: bool = True

    def validate(self) -> None:
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}, got {self.conditions}")
        if self.timing_repeats < 5 and self.timing:
            raise ValueError("timing needs >= 5 repeats (evaluation.md §4.9)")
        if self.g_bits not in G_BITS:
            raise ValueError(f"g_bits must be one of {G_BITS}, got {self.g_bits}")


def _bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="utt", disable=not enabled, dynamic_ncols=True,
                leave=True)


def _vocoded(vocoder, mel: np.ndarray, seed: int) -> dict:
    """Job fields for one output mel: Griffin-Lim runs in the scorer, HiFT here (per
    utterance, fixed seed: evaluation.md §2.3)."""
    if vocoder.is_fallback:
        return {"mel": mel}
    return {"wav": vocoder(mel, seed=seed)}


def _condition_mel(cond: str, out) -> np.ndarray:
    return {"voc": out.mel, "acoustic": out.mel_acoustic, "token": out.mel_token}[cond]


def _jobs(ts, outputs, vocoder, opts: EvalOptions, keep: set[int]):
    """Reference jobs (ASR/embedding of the originals) then one job per condition."""
    for i, (u, o) in enumerate(zip(ts.utterances, outputs)):
        if opts.asr or opts.sim or opts.mos:
            yield scoring.Job(("ref", i), u.ref16, u.num_samples, asr=opts.asr and bool(u.text),
                              embed=opts.sim, is_reference=True, mos=opts.mos)
        for cond in opts.conditions:
            yield scoring.Job((cond, i), u.ref16, u.num_samples, input_wav=u.wav, seed=opts.seed,
                              asr=opts.asr and bool(u.text), embed=opts.sim, keep_wav=i in keep,
                              mos=opts.mos, **_vocoded(vocoder, _condition_mel(cond, o), opts.seed))


def _vc_jobs(ts, plan, mels, vocoder, opts: EvalOptions):
    for n, (pair, mel) in enumerate(zip(plan.pairs, mels)):
        u = ts.utterances[pair.source]
        yield scoring.Job(("vc", n), u.ref16, u.num_samples, seed=opts.seed,
                          audio_metrics=False, asr=opts.asr and bool(u.text), embed=True,
                          keep_wav=n == 0 and opts.audio_samples > 0, mos=opts.mos,
                          **_vocoded(vocoder, mel, opts.seed))


def _sample_indices(ts, n: int) -> set[int]:
    """Deterministic audio-sample picks: the median-length utterances (n of them)."""
    order = sorted(range(len(ts)), key=lambda i: (ts.utterances[i].num_samples, ts.utterances[i].utt_id))
    mid = len(order) // 2
    return set(order[max(0, mid - n // 2): max(0, mid - n // 2) + n])


def evaluate_set(codec, vocoder, ts, scorer: scoring.Scorer, opts: EvalOptions) -> SetResult:
    """Runs and scores one test set -> SetResult (records, corpus values, extras)."""
    multi = ts.multi_speaker and (opts.vc or opts.probe)
    bar = _bar(len(ts), f"{ts.name}: codec", opts.progress)
    outputs = codec_run.run_codec(codec, [u.wav for u in ts.utterances], max_batch=opts.max_batch,
                                  max_frames=opts.max_frames, semantic=multi and opts.probe,
                                  g_bits=opts.g_bits, progress=bar.update)
    bar.close()
    keep = _sample_indices(ts, opts.audio_samples)
    jobs = list(_jobs(ts, outputs, vocoder, opts, keep))
    plan = vc_mels = None
    if multi and opts.vc and opts.sim:
        plan = vcmod.plan_vc(ts.utterances, opts.vc_sources, opts.vc_max_pairs)
        tokens, gs = vcmod.vc_inputs(plan, outputs)
        vc_mels = codec_run.decode_with(codec, tokens, gs, max_batch=opts.max_batch,
                                        max_frames=opts.max_frames)
        jobs += list(_vc_jobs(ts, plan, vc_mels, vocoder, opts))
    bar = _bar(len(jobs), f"{ts.name}: score", opts.progress)
    scored = {}
    for s in scorer.map(jobs):
        scored[s.key] = s
        bar.update(1)
    bar.close()
    probe, notes = None, []
    if multi and opts.vc and not opts.sim:
        notes.append(f"{ts.name}: voice conversion not run: it is scored by speaker similarity, "
                     "which was switched off")
    if multi and opts.probe:
        probe, more = vcmod.run_probes(ts.utterances, outputs, codec.config.codebook_size,
                                       prefix=f"{ts.name} ")
        notes += [f"{ts.name}: {n}" for n in more]
    return assemble_set(ts, codec.config, outputs, scored, opts, plan=plan, probe=probe,
                        probe_notes=notes, sample_indices=sorted(keep))


def checkpoint_entry(path, kind: str) -> dict:
    """{"path", "kind", "sha256"} of a checkpoint file, or of a directory (sha256 over
    the sorted relative paths and contents of its files)."""
    p = pathlib.Path(path)
    if p.is_file():
        return {"path": str(p), "kind": kind, "sha256": report.file_sha256(p)}
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0")
        h.update(report.file_sha256(f).encode())
    return {"path": str(p), "kind": kind, "sha256": h.hexdigest()}


def build_header(codec, vocoder, opts: EvalOptions, sets, checkpoint: dict | None,
                 extra: dict | None = None) -> dict:
    """Provenance for report.json (evaluation.md §7)."""
    info = {"checkpoint": checkpoint, "variant": codec.config.variant,
            "device": str(jax.devices()[0]),
            "precision": {"compute_dtype": codec.config.compute_dtype,
                          "matmul": str(jax.config.jax_default_matmul_precision or "default"),
                          # The run-time policy (precision.py) the evaluator ran under.
                          "policy": str(Precision(matmul=codec.matmul_dtype))},
            "asr": asr.asr_info(scoring.ASR_THREADS) if opts.asr else None,
            "speaker_model": speaker.SPEAKER_MODEL_NAME if opts.sim else None,
            "mos_model": dnsmos.VERSION if opts.mos else None,
            "normaliser": asr.NORMALISER_VERSION, "options": dataclasses.asdict(opts),
            "test_sets": {s.name: {"source": s.source, "utterances": len(s),
                                   "skipped": [list(x) for x in s.skipped]} for s in sets}}
    info.update(extra or {})
    return report.build_header(config=codec.config, vocoder=vocoder.name,
                               seeds={"eval": opts.seed, "vocoder": opts.seed}, extra=info)


def evaluate(codec, vocoder, sets: Sequence, out_dir, opts: EvalOptions = EvalOptions(), *,
             checkpoint: dict | None = None, header_extra: dict | None = None) -> dict:
    """Evaluates `codec` (api.Codec) with `vocoder` on test sets; writes report.json,
    report.md, summary.json, per_utterance.jsonl, plots/ and audio/ under `out_dir`.
    Returns {"paths": {...}, "report": the report dict}."""
    opts.validate()
    if not sets:
        raise ValueError("evaluate: no test sets given")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"test set names must be unique, got {names}")
    results = []
    with scoring.Scorer(opts.workers) as scorer:
        for ts in sets:
            results.append(evaluate_set(codec, vocoder, ts, scorer, opts))
    timing = None
    if opts.timing:
        wavs = [u.wav for u in sets[0].utterances[:20]]
        timing = timing_section(codec, vocoder, wavs, results[0].first_g, opts.timing_repeats)
    header = build_header(codec, vocoder, opts, sets, checkpoint, header_extra)
    return write_outputs(out_dir, header, results, timing)


def load_summary(out_dir) -> dict:
    """summary.json of an evaluation folder (the aggregated numbers only)."""
    return json.loads((pathlib.Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
