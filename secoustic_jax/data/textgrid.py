"""Praat TextGrids (MFA output) -> normalised phones and mel-frame durations.

Reading uses praatio (a maintained parser of both the long "ooTextFile" and the short
text forms). The `phones` interval tier gives (start, end, label); empty labels and
gaps are silence. Conversion follows data.md §2 via `align.durations_from_ends`.
"""

from __future__ import annotations

import pathlib
import re

from praatio import textgrid as ptg

from secoustic_jax.data import align
from secoustic_jax.data.phones import SIL, SPN, normalise

_ARPA = re.compile(r"^[A-Za-z]{1,2}[012]?$")
_PINYIN = re.compile(r"^[a-zü:v]+[0-5]?$")
_SILENCE_LABELS = {"", "sil", "sp", "spn", "<sil>", "<eps>"}


class TextGridError(ValueError):
    """A TextGrid is unreadable or lacks a usable phone tier."""


def read_intervals(path, tier: str = "phones") -> tuple[list[tuple[float, float, str]], str]:
    """Reads one interval tier -> ([(start, end, label)] sorted, words text).

    Empty intervals are kept (they are silences). Raises TextGridError naming the file.
    """
    try:
        tg = ptg.openTextgrid(str(path), includeEmptyIntervals=True, reportingMode="silence")
    except Exception as e:  # praatio raises several types for malformed files
        raise TextGridError(f"{path}: unreadable TextGrid ({type(e).__name__}: {e})") from e
    names = list(tg.tierNames)
    match = [n for n in names if n.lower() == tier] or [n for n in names if n.lower().endswith(
        f" - {tier}")]  # MFA multi-speaker grids name tiers "<speaker> - phones"
    if not match:
        raise TextGridError(f"{path}: no {tier!r} tier (tiers: {names})")
    entries = [(float(e.start), float(e.end), str(e.label)) for e in tg.getTier(match[0]).entries]
    if not entries:
        raise TextGridError(f"{path}: tier {match[0]!r} is empty")
    words = ""
    wmatch = [n for n in names if n.lower() == "words" or n.lower().endswith(" - words")]
    if wmatch:
        words = " ".join(e.label.strip() for e in tg.getTier(wmatch[0]).entries
                         if e.label.strip() and e.label.strip().lower() not in _SILENCE_LABELS)
    return sorted(entries), words


def guess_phone_set(labels: list[str], allowed=("arpabet", "ipa", "pinyin")) -> str:
    """'arpabet' when every non-silence label has the ARPAbet shape (upper-case ASCII letters
    plus an optional stress digit; unknown ones are then reported by the normaliser),
    'pinyin' when all look like pinyin initials/finals with tones somewhere, else 'ipa'."""
    core = [lab.strip() for lab in labels if lab.strip().lower() not in _SILENCE_LABELS]
    if "arpabet" in allowed and core and all(_ARPA.match(c) and c.isupper() for c in core):
        return "arpabet"
    if "pinyin" in allowed and core and all(_PINYIN.match(c.lower()) for c in core) and any(
            c[-1].isdigit() for c in core):
        return "pinyin"
    return "ipa"


def to_durations(intervals: list[tuple[float, float, str]], total_frames: int,
                 phone_set: str, keep_stress: bool = False) -> tuple[list[str], list[int]]:
    """Intervals -> (normalised phones, durations) summing exactly to total_frames.

    Gaps between intervals become SIL; silence labels map to SIL; the alignment is fitted
    to the audio length by the data.md §2 rules.
    """
    labels, ends = [], []
    prev_end = intervals[0][0]
    for start, end, lab in intervals:
        if start > prev_end + 1e-6:  # gap -> silence
            labels.append("")
            ends.append(start)
        labels.append(lab.strip())
        ends.append(end)
        prev_end = end
    pre = [SPN if lab.lower() == "spn" else SIL if lab.lower() in _SILENCE_LABELS else lab
           for lab in labels]
    if phone_set == "ipa":
        raw, d = align.durations_from_ends(pre, ends, total_frames, start=intervals[0][0])
        return normalise(raw, d, "ipa")
    phones, _ = normalise(pre, [0] * len(pre), phone_set, keep_stress)
    return align.durations_from_ends(phones, ends, total_frames, start=intervals[0][0])


def index_textgrids(root) -> dict[str, pathlib.Path]:
    """utterance stem -> TextGrid path for every *.TextGrid under `root` (recursive).

    Raises TextGridError if two files share a stem (ambiguous pairing).
    """
    out: dict[str, pathlib.Path] = {}
    for p in sorted(pathlib.Path(root).rglob("*")):
        if p.suffix.lower() == ".textgrid" and p.is_file():
            if p.stem in out:
                raise TextGridError(f"two TextGrids for {p.stem!r}: {out[p.stem]} and {p}")
            out[p.stem] = p
    return out
