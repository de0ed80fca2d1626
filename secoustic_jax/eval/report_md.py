"""Markdown rendering of a report.json dict (see report.py): header, metric tables per
test set, corpus metrics (WER), codebook statistics, probe accuracies, plots, audio."""

from __future__ import annotations

from typing import Any, Mapping

_HEADER_KEYS = ("project_commit", "vocoder", "checkpoint", "seeds", "resampler", "asr",
                "speaker_model", "normaliser", "device", "precision")
_CODEBOOK_KEYS = ("num_tokens", "used_codes", "utilisation", "perplexity", "normalised_entropy",
                  "max_token_freq", "zero_code_freq", "nominal_bitrate_bps", "entropy_bitrate_bps",
                  "g_bits")
_TOTAL_KEYS = ("total_kbps_3s", "total_kbps_10s", "total_kbps_30s", "total_kbps_set_mean")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _cell(agg: Mapping | None) -> str:
    """"mean ± std (n, f fail)" for one aggregate."""
    if not agg:
        return "–"
    if agg["n"] == 0:
        return f"– (0, {agg['failures']} fail)"
    fail = f", {agg['failures']} fail" if agg["failures"] else ""
    return f"{agg['mean']:.4g} ± {agg['std']:.3g} (n={agg['n']}{fail})"


def _metric_tables(summary: Mapping) -> list[str]:
    lines = []
    for set_name in sorted(summary):
        conds = summary[set_name]
        names = sorted({m for c in conds.values() for m in c.get("metrics", {})})
        if names:
            lines += [f"### {set_name}: per-utterance metrics", ""]
            rows = [[m] + [_cell(conds[c].get("metrics", {}).get(m)) for c in sorted(conds)] for m in names]
            lines += _table(["metric"] + sorted(conds), rows)
        corpus = {c: v["corpus"] for c, v in conds.items() if v.get("corpus")}
        if corpus:
            keys = sorted({k for v in corpus.values() for k, x in v.items() if not isinstance(x, dict)})
            lines += [f"### {set_name}: corpus metrics", ""]
            lines += _table(["condition"] + keys, [[c] + [corpus[c].get(k) for k in keys] for c in sorted(corpus)])
        books = {c: v["codebook"] for c, v in conds.items() if v.get("codebook")}
        if books:
            lines += [f"### {set_name}: codebook", ""]
            rows = [[c] + [books[c].get(k) for k in _CODEBOOK_KEYS] for c in sorted(books)]
            lines += _table(["condition"] + list(_CODEBOOK_KEYS), rows)
            lines += _bitrate_table(set_name, books)
            for c in sorted(books):
                top = ", ".join(f"{t} ({f:.3%})" for t, f in books[c].get("top_tokens", []))
                lines += [f"Top tokens ({c}): {top}", ""]
    return lines


def _bitrate_table(set_name: str, books: Mapping) -> list[str]:
    """Tokens + G per G precision: what decoding really needs per utterance."""
    rows = []
    for c in sorted(books):
        b = books[c]
        for bits, t in sorted((b.get("with_g") or {}).items(), key=lambda kv: -int(kv[0])):
            rows.append([c, "float32" if bits == "32" else f"{bits}-bit", t["g_bits_per_utterance"],
                         b["token_kbps"]] + [t.get(k) for k in _TOTAL_KEYS])
    if not rows:
        return []
    return [f"### {set_name}: bitrate with G (tokens + paralinguistic vector)", ""] + _table(
        ["condition", "G", "G bits/utt", "token kbps", "total kbps 3 s", "10 s", "30 s",
         "set mean"], rows)


def _probe_table(probe: Mapping) -> list[str]:
    rows = []
    for feat in sorted(probe):
        for kind in ("speaker", "content"):
            r = probe[feat].get(kind)
            if r:
                rows.append([feat, kind, r["accuracy"], r["chance"], r["n_classes"], r["n_samples"]])
    return ["## Disentanglement probe", ""] + _table(
        ["features", "probe", "accuracy", "chance", "classes", "N"], rows)


def render(report: Mapping) -> str:
    """The report.md text for a report.json dict."""
    h = report["header"]
    lines = ["# SecoustiCodec evaluation report", ""]
    rows = [[k, h[k]] for k in _HEADER_KEYS if k in h]
    rows += [["packages", ", ".join(f"{k} {v}" for k, v in sorted(h.get("packages", {}).items()) if v)]]
    rows += [["machine", ", ".join(f"{k}={v}" for k, v in sorted(h.get("machine", {}).items()))]]
    lines += ["## Header", ""] + _table(["field", "value"], rows)
    lines += ["Full config and provenance: `report.json` → `header`.", "", "## Results", ""]
    lines += _metric_tables(report["summary"])
    if report.get("probe"):
        lines += _probe_table(report["probe"])
    plots = report["artifacts"]["plots"]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    audio = report["artifacts"]["audio"]
    if audio:
        lines += ["## Audio samples", ""] + [f"- {a['utt_id']} ({a['label']}): [{a['path']}]({a['path']})"
                                              for a in audio] + [""]
    return "\n".join(lines)
