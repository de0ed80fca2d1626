"""The embedded default corpus: synthetic multi-speaker English with exact phone timings.

`build_corpus(out, CorpusConfig(...))` plans utterances deterministically from the seed
(text from the sentence generator, seeded prosody jitter), synthesises them with a
process pool (tasks = chunks of one voice), resamples to 22.05 kHz (soxr VHQ), converts
the engine timings to mel-frame durations (data.md §2), and writes

  out/wavs/<voice>/<utt>.wav  (PCM_16, 22 050 Hz)
  out/{train,valid,test,test_unseen}.jsonl, out/phones.json, out/meta.json, out/report.json

Splits are by utterance and by sentence (a sentence never crosses splits); the held-out
voice's utterances all go to `test_unseen`; espeak-ng voices (poor for WER) are train-only.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import pathlib
import time
import zlib

import numpy as np

from secoustic_jax.audio.io import prepare_waveform, save_wav
from secoustic_jax.config.base import to_dict
from secoustic_jax.config.data import CorpusConfig
from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.phones import SIL, PhoneError, PhoneInventory, normalise
from secoustic_jax.data.sentences import generate_sentences, split_sentences
from secoustic_jax.data.synth import (VOICES, Job, SynthError, Synthesized, Voice, engine_versions,
                                      synthesize)

TINY_VOICES = ("flite_kal16", "flite_slt", "espeak_en-us+f3", "flite_rms")
DEFAULT_VOICES = ("festival_kal", "festival_ked", "festival_slt", "flite_kal16", "flite_awb",
                  "flite_rms", "flite_slt", "piper_joe", "espeak_en-us+m3", "espeak_en-us+f3",
                  "espeak_en-gb-x-rp+f2", "espeak_en-gb-scotland+m1", "espeak_en-029+m2")
CHUNK = 25  # utterances per pool task (festival starts once per task)


def resolve(cfg: CorpusConfig) -> tuple[tuple[str, ...], str, int]:
    """(voices, held-out voice or "", utterances per WER voice) for the config."""
    cfg.validate()
    if cfg.size == "tiny":
        voices, n, held = TINY_VOICES, 8, "flite_rms"
    else:
        voices, held = DEFAULT_VOICES, cfg.heldout_voice
        n = 100 if cfg.size == "default" else int(cfg.size)  # ~2 h (data.md §5.6)
    if cfg.voices:
        voices = tuple(cfg.voices)
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise ValueError(f"unknown voice(s) {unknown}; available: {sorted(VOICES)}")
    if cfg.size == "tiny" and cfg.heldout_voice != CorpusConfig.heldout_voice:
        held = cfg.heldout_voice
    return voices, (held if held in voices else ""), n


def _counts(voice: Voice, held: bool, n: int) -> int:
    if held:
        return max(2, n // 4)
    return n if voice.wer_usable else max(2, n // 5)


def plan(cfg: CorpusConfig) -> dict[str, list[tuple[Job, str]]]:
    """voice id -> [(Job, split)], deterministic in the config (seed included)."""
    voices, held, n = resolve(cfg)
    pools = split_sentences(generate_sentences(600, cfg.seed), 50, 50)
    pools["test_unseen"] = pools["test"]
    lo, hi = cfg.sentences_per_utt
    out = {}
    for vid in voices:
        voice = VOICES[vid]
        k_total = _counts(voice, vid == held, n)
        n_valid = max(1, round(k_total * cfg.valid_fraction)) if cfg.valid_fraction else 0
        n_test = max(1, round(k_total * cfg.test_fraction)) if cfg.test_fraction else 0
        jobs = []
        for k in range(k_total):
            if vid == held:
                split = "test_unseen"
            elif not voice.wer_usable or k < k_total - n_valid - n_test:
                split = "train"
            else:
                split = "valid" if k < k_total - n_test else "test"
            rng = np.random.default_rng([cfg.seed, zlib.crc32(vid.encode()), k])
            pool = pools[split]
            m = int(rng.integers(lo, hi + 1))
            text = " ".join(pool[int(i)] for i in rng.choice(len(pool), m, replace=False))
            prosody = {"stretch": round(float(rng.uniform(*cfg.stretch_range)), 4),
                       "f0": round(float(rng.uniform(*voice.f0)), 1) if voice.f0 else None,
                       "pitch": int(rng.integers(cfg.espeak_pitch_range[0],
                                                 cfg.espeak_pitch_range[1] + 1)),
                       "noise": round(float(rng.uniform(0.5, 0.8)), 4),
                       "noise_w": round(float(rng.uniform(0.6, 0.9)), 4)}
            jobs.append((Job(f"{vid}_{k:05d}", text, prosody), split))
        out[vid] = jobs
    return out


def _durations(s: Synthesized, total_frames: int) -> tuple[list[str], list[int]]:
    """Engine timing -> normalised (phones, durations) summing to total_frames."""
    if s.phone_set == "arpabet":
        phones, _ = normalise(s.labels, [0] * len(s.labels), "arpabet")
        return align.durations_from_ends(phones, s.timing, total_frames)
    pre = [SIL if lab.strip() == "" and lab != " " else lab for lab in s.labels]
    if s.timing_kind == "starts":  # espeak: start samples at its native rate
        starts = np.maximum.accumulate(np.asarray(s.timing, dtype=np.float64)) / s.sr
        raw, d = align.durations_from_starts(pre, starts.tolist(), total_frames)
    else:  # piper: sample counts (multiples of 256 -> exact)
        raw, d = align.durations_from_samples(pre, s.timing, total_frames, s.sr)
    return normalise(raw, d, "ipa")


def to_record(s: Synthesized, voice: Voice, split: str, out: pathlib.Path) -> dict:
    """Resample, write the WAV, convert timings; raises ValueError subclasses on bad items."""
    wav = prepare_waveform(s.wav, s.sr)  # soxr VHQ to 22 050 Hz
    peak = float(np.abs(wav).max())
    if peak > 0.99:  # resampling overshoot would clip in PCM_16; scaling keeps timing
        wav = wav * np.float32(0.99 / peak)
    total = len(wav) // align.HOP
    phones, durs = _durations(s, total)
    why = align.check_durations(durs, total)
    if why:
        raise align.AlignmentError(why)
    rel = pathlib.Path("wavs") / voice.id.replace("+", "_") / f"{s.job.utt_id.replace('+', '_')}.wav"
    save_wav(out / rel, wav, align.SR, subtype="PCM_16")
    extra = {"engine": voice.engine, "voice": voice.name, "gender": voice.gender,
             "native_sample_rate": s.sr, "prosody": s.job.prosody,
             "speaker_group": voice.speaker_group or voice.id, "wer_usable": voice.wer_usable}
    return manifest.make_record(
        id=f"synthetic:{s.job.utt_id}", corpus="synthetic", audio=rel.as_posix(),
        sample_rate=align.SR, num_samples=len(wav), speaker=f"synthetic:{voice.id}",
        language="en", text=s.job.text, split=split, phone_set=s.phone_set, phones=phones,
        durations=durs, extra=extra)


def run_task(voice_id: str, items: list[tuple[Job, str]], out_dir: str
             ) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Pool task: synthesise one chunk of one voice -> (records, skips as (item, kind, why))."""
    voice, out = VOICES[voice_id], pathlib.Path(out_dir)
    splits = {job.utt_id: split for job, split in items}
    records, skips = [], []
    for res in synthesize(voice, [job for job, _ in items]):
        if isinstance(res, SynthError):
            skips.append((voice_id, R.UNREADABLE_AUDIO, f"synthesis failed: {res}"))
            continue
        try:
            records.append(to_record(res, voice, splits[res.job.utt_id], out))
        except PhoneError as e:
            skips.append((res.job.utt_id, R.UNKNOWN_PHONES, str(e)))
        except ValueError as e:  # AudioError, AlignmentError
            skips.append((res.job.utt_id, R.BAD_ALIGNMENT, str(e)))
    return records, skips


def _tasks(jobs: dict[str, list]) -> list[tuple[str, list]]:
    tasks = [(vid, items[i:i + CHUNK]) for vid, items in jobs.items()
             for i in range(0, len(items), CHUNK)]
    slow = {"piper": 0, "festival": 1}  # longest tasks first for load balance
    return sorted(tasks, key=lambda t: slow.get(VOICES[t[0]].engine, 2))


def build_corpus(out, cfg: CorpusConfig = CorpusConfig(), *, log=print) -> dict:
    """Builds the corpus under `out`; returns the summary written to meta.json."""
    t0 = time.time()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg)
    order = {job.utt_id: i for i, (job, _) in enumerate(x for v in jobs.values() for x in v)}
    rep = R.SkipReport("corpus build")
    records: list[dict] = []
    tasks = _tasks(jobs)
    if cfg.workers == 1:
        results = [run_task(v, items, str(out)) for v, items in tasks]
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of onnx/ctypes state
        with cf.ProcessPoolExecutor(cfg.workers, mp_context=ctx) as ex:
            results = list(ex.map(run_task, *zip(*[(v, it, str(out)) for v, it in tasks])))
    for recs, skips in results:
        records.extend(recs)
        for item, kind, why in skips:
            rep.skip(item, kind, why)
    records.sort(key=lambda r: order[r["id"].split(":", 1)[1]])
    for r in records:
        rep.keep(r["duration"])
    return _write_outputs(out, cfg, records, rep, engine_versions(), time.time() - t0, log)


def _write_outputs(out: pathlib.Path, cfg: CorpusConfig, records: list[dict],
                   rep: R.SkipReport, versions: dict, seconds: float, log) -> dict:
    inv = PhoneInventory.from_records(records)
    inv.save(out / "phones.json")
    split_counts = {}
    for split in ("train", "valid", "test", "test_unseen"):
        recs = [r for r in records if r["split"] == split]
        split_counts[split] = len(recs)
        manifest.write_manifest(out / f"{split}.jsonl", recs)
    speakers = sorted({r["speaker"] for r in records})
    hours = sum(r["duration"] for r in records) / 3600
    meta = {"format": "secoustic-corpus-v1", "config": to_dict(cfg), "seed": cfg.seed,
            "synthesizers": versions, "utterances": len(records), "hours": round(hours, 4),
            "speakers": speakers, "splits": split_counts, "phones": len(inv),
            "skipped": rep.skipped, "build_seconds": round(seconds, 1)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(rep.to_dict(), indent=1), encoding="utf-8")
    log(rep.summary())
    log(f"corpus {out}: {len(records)} utterances, {hours:.3f} hours, {len(speakers)} speakers "
        f"({', '.join(s.split(':', 1)[1] for s in speakers)}), splits {split_counts}, "
        f"{len(inv)} phones, built in {seconds:.1f} s")
    return meta
