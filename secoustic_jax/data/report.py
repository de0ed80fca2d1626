"""Counting and reporting skipped items: bad data never stops a run and is never silent.

Every skip carries a *kind* (a short stable key used for counting) and a free-text
*reason* naming the item and the problem. Ingest prints the report at the end; the
training pipeline exposes it (`stats()`) for the training logs.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

log = logging.getLogger(__name__)

# Stable kinds (counters in logs and tests). Free text goes in the reason.
UNREADABLE_AUDIO = "unreadable_audio"
NAN_AUDIO = "nan_audio"
EMPTY_AUDIO = "empty_audio"
BAD_DURATIONS = "bad_durations"
UNKNOWN_PHONES = "unknown_phones"
TOO_SHORT = "too_short"
TOO_MANY_PHONES = "too_many_phones"
MISSING_ALIGNMENT = "missing_alignment"
MISSING_TEXT = "missing_text"
BAD_ALIGNMENT = "bad_alignment"
BAD_RECORD = "bad_record"
LENGTH_MISMATCH = "length_mismatch"
DUPLICATE_ID = "duplicate_id"
NON_SPEECH = "non_speech"


@dataclasses.dataclass(frozen=True)
class Skip:
    """One skipped item: where (utterance id, file or manifest line), kind, reason."""

    item: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: [{self.kind}] {self.reason}"


class SkipReport:
    """Accumulates skips and kept-item totals; mergeable; printable; JSON-able."""

    def __init__(self, name: str = "data", keep_items: int = 10000):
        self.name = name
        self.kept = 0
        self.kept_seconds = 0.0
        self.counts: collections.Counter[str] = collections.Counter()
        self.items: list[Skip] = []
        self.notes: collections.Counter[str] = collections.Counter()  # kept-with-caveat counts
        self._keep_items = keep_items  # bound memory on huge corpora; counts stay exact

    def skip(self, item: str, kind: str, reason: str) -> Skip:
        s = Skip(str(item), kind, reason)
        self.counts[kind] += 1
        if len(self.items) < self._keep_items:
            self.items.append(s)
        log.info("skipped %s", s)
        return s

    def note(self, kind: str) -> None:
        """Counts a caveat on a *kept* item (e.g. an optional alignment that failed)."""
        self.notes[kind] += 1

    def keep(self, seconds: float = 0.0) -> None:
        self.kept += 1
        self.kept_seconds += float(seconds)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "SkipReport") -> "SkipReport":
        self.kept += other.kept
        self.kept_seconds += other.kept_seconds
        self.counts.update(other.counts)
        self.notes.update(other.notes)
        room = self._keep_items - len(self.items)
        self.items.extend(other.items[:max(room, 0)])
        return self

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": self.kept, "kept_hours": self.kept_seconds / 3600,
                "skipped": self.skipped, "by_kind": dict(sorted(self.counts.items())),
                "notes": dict(sorted(self.notes.items())),
                "items": [dataclasses.asdict(s) for s in self.items]}

    def summary(self, max_items: int = 20) -> str:
        """Multi-line human summary: totals, counts per kind, the first `max_items` reasons."""
        lines = [f"{self.name}: kept {self.kept} ({self.kept_seconds / 3600:.3f} h), "
                 f"skipped {self.skipped}"]
        for kind, n in sorted(self.counts.items()):
            lines.append(f"  {kind}: {n}")
        for kind, n in sorted(self.notes.items()):
            lines.append(f"  note {kind}: {n}")
        for s in self.items[:max_items]:
            lines.append(f"    {s}")
        if len(self.items) > max_items:
            lines.append(f"    ... {len(self.items) - max_items} more (see the report file)")
        return "\n".join(lines)
