"""The reproduction bars of issue 14 against a demo-style run's outputs (docs/reproduction.md).

    python bench/reproduction_bars.py reports/small/example     # -> a markdown table

Reads eval_summary.json and disentangle.json of the run's example folder; every figure
sits beside the vocoder ceiling of the same report.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib


def _metric(summary, s, cond, name):
    return summary[s][cond]["metrics"][name]["mean"]


def _wer(summary, s, cond):
    return summary[s][cond]["corpus"]["wer"]


def token_rate_hz(summary) -> float:
    """Tokens per second of the evaluated model, from its nominal bit rate (log2 of the
    codebook size bits per token)."""
    book = summary["E2"]["token"]["codebook"]
    return book["nominal_bitrate_bps"] / math.log2(book["num_codes"])


def rows(example: pathlib.Path) -> list[tuple[str, float, float | None, bool, float]]:
    """(bar, measured, vocoder ceiling or None, met, bound)."""
    ev = json.loads((example / "eval_summary.json").read_text())["summary"]
    dis = json.loads((example / "disentangle.json").read_text())["features"]
    at_least = lambda v, b: v >= b  # noqa: E731
    at_most = lambda v, b: v <= b  # noqa: E731
    out = []

    def bar(text, value, ceiling, test, bound):
        out.append((text, value, ceiling, test(value, bound), bound))

    bar("acoustic WB-PESQ >= 2.2 (E2)", _metric(ev, "E2", "acoustic", "pesq_wb"),
        _metric(ev, "E2", "voc", "pesq_wb"), at_least, 2.2)
    # The token-path bars are set for the 86 Hz model; a 21.5 Hz run is scored against them
    # too, and its rows say so.
    hz = token_rate_hz(ev)
    rate = "" if round(hz) == 86 else f"; 86 Hz bar, this model {hz:.1f} Hz"
    for s, name in (("E2", "E2"), ("E2-unseen", "held-out voice")):
        bar(f"token WB-PESQ >= 1.6 ({name}{rate})", _metric(ev, s, "token", "pesq_wb"),
            _metric(ev, s, "voc", "pesq_wb"), at_least, 1.6)
        bar(f"token WER <= 0.30 ({name}{rate})", _wer(ev, s, "token"), _wer(ev, s, "voc"),
            at_most, 0.30)
    g, s_pooled = dis["G"]["accuracy"], dis["S_pooled"]["accuracy"]
    bar("speaker probe G >= 0.90", g, None, at_least, 0.90)
    bar(f"probe S_pooled <= G - 0.30 = {g - 0.30:.3f}", s_pooled, None, at_most, g - 0.30)
    tgt, src = _metric(ev, "E2", "vc", "sim_tgt"), _metric(ev, "E2", "vc", "sim_src")
    bar("VC success >= 0.7", ev["E2"]["vc"]["corpus"]["success_rate"], None, at_least, 0.7)
    bar("VC SIM to target - SIM to source >= 0.05", tgt - src, None, at_least, 0.05)
    return out


def table(example: pathlib.Path) -> str:
    lines = ["| bar | measured | vocoder ceiling | |", "|---|---:|---:|---|"]
    for bar, value, ceiling, met, bound in rows(example):
        c = "-" if ceiling is None else f"{ceiling:.3f}"
        verdict = "met" if met else f"missed by {abs(value - bound):.3f}"
        lines.append(f"| {bar} | {value:.3f} | {c} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("example", type=pathlib.Path, help="the run's example/ folder")
    print(table(ap.parse_args().example))


if __name__ == "__main__":
    main()
