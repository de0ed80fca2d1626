"""The JSON Lines manifest (data.md §1): records, reading, writing and validation.

One JSON object per line. `audio` is relative to the manifest's folder (the corpus
root); `phones.json` (the phone inventory) sits beside the manifest. Every record holds

  id, corpus, audio, sample_rate, num_samples, duration (s), speaker, language, text,
  split, and for stage 2: phone_set, phones [P], durations [P] (mel frames at 86.13 Hz,
  sum == T = floor(N22 / 256)); optional `extra` (object).

`validate_record` returns every problem of one record; `load_manifest` keeps the good
records and reports each bad line (line number, kind, reason) in a SkipReport.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterable

from secoustic_jax.atomic import atomic_path
from secoustic_jax.config.data import SPLITS
from secoustic_jax.data import report as R
from secoustic_jax.data.align import check_durations, frames_for
from secoustic_jax.data.phones import PhoneInventory

REQUIRED = {"id": str, "corpus": str, "audio": str, "sample_rate": int, "num_samples": int,
            "duration": float, "speaker": str, "language": str, "text": str, "split": str}
STAGE2 = {"phone_set": str, "phones": list, "durations": list}
FIELD_ORDER = tuple(REQUIRED) + tuple(STAGE2) + ("extra",)


def make_record(*, id: str, corpus: str, audio: str, sample_rate: int, num_samples: int,
                speaker: str, language: str, text: str, split: str,
                phone_set: str | None = None, phones: list[str] | None = None,
                durations: list[int] | None = None, extra: dict | None = None) -> dict:
    """Builds a record in canonical field order; `duration` is derived (s, 4 decimals)."""
    rec = {"id": id, "corpus": corpus, "audio": str(audio), "sample_rate": int(sample_rate),
           "num_samples": int(num_samples),
           "duration": round(int(num_samples) / int(sample_rate), 4), "speaker": speaker,
           "language": language, "text": text, "split": split}
    if phones is not None:
        rec.update(phone_set=phone_set, phones=list(phones), durations=[int(d) for d in durations])
    if extra:
        rec["extra"] = extra
    return rec


def num_frames(rec: dict) -> int:
    """T of a record: floor(N22 / 256) with N22 the soxr length at 22.05 kHz."""
    return frames_for(rec["num_samples"], rec["sample_rate"])


def _type_ok(value, tp) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def validate_record(rec, *, require_alignment: bool = False,
                    inventory: PhoneInventory | None = None,
                    root: pathlib.Path | None = None) -> list[tuple[str, str]]:
    """All problems of one record as (kind, reason) pairs; empty when the record is good.

    Checks field presence and types, rates and lengths, the duration field, the split,
    len(phones) == len(durations), sum(durations) == T, phones in `inventory` (if given)
    and, when `root` is given, that the audio file exists.
    """
    if not isinstance(rec, dict):
        return [(R.BAD_RECORD, f"line is not a JSON object ({type(rec).__name__})")]
    out: list[tuple[str, str]] = []
    for key, tp in REQUIRED.items():
        if key not in rec:
            out.append((R.BAD_RECORD, f"missing field {key!r}"))
        elif not _type_ok(rec[key], tp):
            out.append((R.BAD_RECORD, f"field {key!r} must be {tp.__name__}, got {rec[key]!r:.40}"))
    if out:
        return out
    if rec["sample_rate"] <= 0 or rec["num_samples"] <= 0:
        out.append((R.EMPTY_AUDIO, f"sample_rate {rec['sample_rate']} / num_samples "
                                   f"{rec['num_samples']} must be positive"))
        return out
    if abs(rec["duration"] - rec["num_samples"] / rec["sample_rate"]) > 1e-3:  # 4-decimal rounding
        out.append((R.BAD_RECORD, f"duration {rec['duration']} s != num_samples / sample_rate"))
    if rec["split"] not in SPLITS:
        out.append((R.BAD_RECORD, f"split {rec['split']!r} not in {SPLITS}"))
    if root is not None and not (root / rec["audio"]).is_file():
        out.append((R.UNREADABLE_AUDIO, f"audio file {rec['audio']!r} not found under {root}"))
    out.extend(_alignment_problems(rec, require_alignment, inventory))
    return out


def _alignment_problems(rec: dict, require: bool, inventory) -> list[tuple[str, str]]:
    has = [k in rec and rec[k] is not None for k in STAGE2]
    if not any(has):
        return [(R.MISSING_ALIGNMENT, "no phones/durations (stage 2 needs them)")] if require else []
    if not all(has):
        return [(R.BAD_RECORD, "phone_set, phones and durations must appear together")]
    phones, durs = rec["phones"], rec["durations"]
    if not isinstance(phones, list) or not isinstance(durs, list):
        return [(R.BAD_RECORD, "phones and durations must be lists")]
    if not phones or not all(isinstance(p, str) for p in phones):
        return [(R.BAD_RECORD, "phones must be a non-empty list of strings")]
    if len(phones) != len(durs):
        return [(R.BAD_DURATIONS, f"{len(phones)} phones but {len(durs)} durations")]
    out = []
    why = check_durations(durs, num_frames(rec))
    if why:
        out.append((R.BAD_DURATIONS, why))
    if inventory is not None:
        unknown = inventory.unknown(phones)
        if unknown:
            out.append((R.UNKNOWN_PHONES, f"phones not in the inventory: {unknown[:8]}"))
    return out


def write_manifest(path, records: Iterable[dict]) -> pathlib.Path:
    """Writes JSON Lines atomically (temp file + rename), UTF-8, one record a line."""
    p = pathlib.Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    return p


def read_lines(path) -> Iterable[tuple[int, object | None, str | None]]:
    """Yields (line_number, parsed object or None, JSON error or None); blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield no, json.loads(line), None
            except json.JSONDecodeError as e:
                yield no, None, f"invalid JSON ({e.msg} at column {e.colno})"


def load_manifest(path, *, require_alignment: bool = False,
                  inventory: PhoneInventory | None = None, check_files: bool = False,
                  report: R.SkipReport | None = None) -> tuple[list[dict], R.SkipReport]:
    """Reads a manifest, keeping good records; every bad line is reported with its reason.

    Returns (records, report). Each record gets `_root` (absolute corpus root) and `_line`.
    Duplicate ids (within this manifest) after the first are skipped too.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest {p} not found")
    root = p.resolve().parent
    rep = report if report is not None else R.SkipReport(f"manifest {p.name}")
    out, seen = [], set()
    for no, rec, err in read_lines(p):
        where = f"{p.name}:{no}"
        if err:
            rep.skip(where, R.BAD_RECORD, err)
            continue
        problems = validate_record(rec, require_alignment=require_alignment,
                                   inventory=inventory, root=root if check_files else None)
        if not problems and rec["id"] in seen:
            problems = [(R.DUPLICATE_ID, f"duplicate id {rec['id']!r}")]
        if problems:
            item = f"{where} ({rec.get('id', '?')})" if isinstance(rec, dict) else where
            for kind, why in problems[:1]:  # counted once, under its first problem
                rep.skip(item, kind, "; ".join(w for _, w in problems))
            continue
        seen.add(rec["id"])
        rec = dict(rec, _root=str(root), _line=no)
        out.append(rec)
        rep.keep(rec["duration"])
    return out, rep


def audio_path(rec: dict) -> pathlib.Path:
    """Absolute audio path of a loaded record."""
    return pathlib.Path(rec["_root"]) / rec["audio"]


def public(rec: dict) -> dict:
    """The record without loader-private keys (`_root`, `_line`), in canonical order."""
    keys = [k for k in FIELD_ORDER if k in rec] + [
        k for k in rec if k not in FIELD_ORDER and not k.startswith("_")]
    return {k: rec[k] for k in keys}
