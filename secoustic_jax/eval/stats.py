"""Aggregation of per-utterance metrics (evaluation.md §4: mean, std, n, failures).

A per-utterance record is a dict with at least
    {"set": str, "condition": str, "utt_id": str, "metrics": {name: float | None}}
and optionally "failures": {name: reason} plus any JSON-serialisable extras (text,
lengths, ...). A metric value that is None or NaN is a failure: excluded and counted.

Reproducibility: values are quantised to `SIG_DIGITS` significant digits before they are
stored or aggregated, and sums use `math.fsum` (exactly rounded, independent of order).
This absorbs last-ulp jitter of metrics computed with alignment-dependent SIMD
reductions (ESTOI, see docs/evaluation.md) so reruns give byte-identical reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

SIG_DIGITS = 10
REQUIRED_RECORD_KEYS = ("set", "condition", "utt_id", "metrics")


def quantize(value) -> float | None:
    """Round a float to SIG_DIGITS significant digits; None/NaN -> None; ±Inf rejected."""
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return None
    if math.isinf(v):
        raise ValueError("metric value is infinite; a metric must be finite or a failure (NaN)")
    # Correctly rounded decimal formatting, then parsing, is deterministic everywhere.
    return float(format(v, f".{SIG_DIGITS}g"))


def aggregate(values: Iterable) -> dict:
    """{"mean", "std" (population, ddof 0), "median", "n", "failures"} over one metric's
    per-utterance values (floats, NaN or None). mean/std/median are None when n = 0."""
    kept: list[float] = []
    failures = 0
    for v in values:
        q = quantize(v)
        if q is None:
            failures += 1
        else:
            kept.append(q)
    n = len(kept)
    if n == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "failures": failures}
    mean = math.fsum(kept) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / n)
    s = sorted(kept)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"mean": quantize(mean), "std": quantize(std), "median": quantize(median),
            "n": n, "failures": failures}


def check_record(rec: Mapping, index: int = 0) -> None:
    """Raises ValueError naming the record and the problem if `rec` is malformed."""
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in rec]
    if missing:
        raise ValueError(f"utterance record {index} lacks keys {missing}")
    if not isinstance(rec["metrics"], Mapping):
        raise ValueError(f"utterance record {index}: 'metrics' must be a dict of name -> float")
    for key in ("set", "condition", "utt_id"):
        if not isinstance(rec[key], str) or not rec[key]:
            raise ValueError(f"utterance record {index}: {key!r} must be a non-empty string")


def group_records(records: Sequence[Mapping]) -> dict[str, dict[str, list[Mapping]]]:
    """{set: {condition: [records]}} preserving input order; validates every record and
    rejects duplicate (set, condition, utt_id) triples."""
    groups: dict[str, dict[str, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
    seen: set[tuple[str, str, str]] = set()
    for i, rec in enumerate(records):
        check_record(rec, i)
        key = (rec["set"], rec["condition"], rec["utt_id"])
        if key in seen:
            raise ValueError(f"duplicate utterance record {key}")
        seen.add(key)
        groups[rec["set"]][rec["condition"]].append(rec)
    return {s: dict(c) for s, c in groups.items()}


def aggregate_records(records: Sequence[Mapping]) -> dict[str, dict[str, dict[str, dict]]]:
    """{set: {condition: {metric: aggregate}}} over the union of metric names per group
    (an utterance lacking a metric the others have counts as a failure for it)."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for set_name, conds in group_records(records).items():
        out[set_name] = {}
        for cond, recs in conds.items():
            names = sorted({m for r in recs for m in r["metrics"]})
            out[set_name][cond] = {m: aggregate(r["metrics"].get(m) for r in recs) for m in names}
    return out


def rank_records(records: Sequence[Mapping], metric: str, higher_is_better: bool) -> list[Mapping]:
    """Records with a finite `metric`, best first (ties broken by utt_id for stability)."""
    scored = [(quantize(r["metrics"].get(metric)), r["utt_id"], r) for r in records]
    scored = [t for t in scored if t[0] is not None]
    scored.sort(key=lambda t: ((-t[0] if higher_is_better else t[0]), t[1]))
    return [t[2] for t in scored]
