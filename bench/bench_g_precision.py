"""What transmitting G at lower precision costs: SIM, PESQ, STOI, WER and mel L1 of the token
path at G = float32 / 8 / 6 / 4 bits (quantizer/g_quant.py), on one trained checkpoint.

    .venv/bin/python bench/bench_g_precision.py [--ckpt demo/work/train]
        [--manifest cache/demo_corpus/test.jsonl] [--per-speaker 4]
        [--out bench/results/g_precision.json]

Each precision is one `evaluate()` run of the same utterances with conditions=("token",),
the Griffin-Lim fallback vocoder at seed 0 and ASR + speaker similarity on (no DNSMOS, VC,
probe or timing): only G differs between the runs, so every delta is G's rounding alone.
Prints the docs/evaluation.md table (markdown) and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile

METRICS = ("spk_sim", "pesq_wb", "stoi", "mel_l1")


def _one(codec, vocoder, sets, bits: int, workers: int) -> dict:
    from secoustic_jax.eval.evaluate import EvalOptions, evaluate

    opts = EvalOptions(conditions=("token",), mos=False, vc=False, probe=False, timing=False,
                       workers=workers, audio_samples=0, progress=False, g_bits=bits)
    with tempfile.TemporaryDirectory() as d:
        rep = evaluate(codec, vocoder, sets, d, opts)["report"]
    s = rep["summary"][sets[0].name]["token"]
    out = {m: s["metrics"][m]["mean"] for m in METRICS}
    out["wer"] = s["corpus"]["wer"]
    book = s["codebook"]
    out.update(g_bits_per_utterance=book["g_bits_per_utterance"],
               **{k: book[k] for k in book if k.startswith("total_kbps")},
               utterances=s["metrics"]["spk_sim"]["n"])
    return out


def table(rows: dict) -> str:
    ref = rows["32"]
    lines = ["| G precision | bits / utterance | total kbps at 3 / 10 / 30 s | SIM | ΔSIM | WB-PESQ | "
             "ΔPESQ | WER | ΔWER | Δmel L1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for bits, r in rows.items():
        name = "float32" if bits == "32" else f"{bits}-bit"
        kbps = " / ".join(f"{r[f'total_kbps_{s}s']:.2f}" for s in (3, 10, 30))
        lines.append(f"| {name} | {r['g_bits_per_utterance']:.0f} | {kbps} | {r['spk_sim']:.3f} | "
                     f"{r['spk_sim'] - ref['spk_sim']:+.3f} | {r['pesq_wb']:.3f} | "
                     f"{r['pesq_wb'] - ref['pesq_wb']:+.3f} | {r['wer']:.3f} | {r['wer'] - ref['wer']:+.3f} | "
                     f"{r['mel_l1'] - ref['mel_l1']:+.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="demo/work/train")
    ap.add_argument("--manifest", default="cache/demo_corpus/test.jsonl")
    ap.add_argument("--per-speaker", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/g_precision.json")
    args = ap.parse_args(argv)

    from secoustic_jax.eval.checkpoints import load_codec
    from secoustic_jax.eval.testset import from_manifest
    from secoustic_jax.quantizer.g_quant import G_BITS
    from secoustic_jax.vocoder import load_vocoder

    if not pathlib.Path(args.ckpt).exists():
        print(f"bench_g_precision: no checkpoint at {args.ckpt} (run `make demo` first)", file=sys.stderr)
        return 2
    codec, entry = load_codec(args.ckpt)
    sets = [from_manifest(args.manifest, "E2", per_speaker=args.per_speaker)]
    vocoder = load_vocoder("griffin-lim")
    rows = {}
    for bits in G_BITS:
        rows[str(bits)] = _one(codec, vocoder, sets, bits, args.workers)
        print(f"  G {bits:>2} bits: {json.dumps(rows[str(bits)])}", flush=True)
    md = table(rows)
    print(md)
    res = {"bench": "g_precision", "checkpoint": entry, "manifest": args.manifest,
           "utterances": len(sets[0]), "vocoder": "griffin-lim-32 seed 0",
           "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
           "rows": rows, "table_md": md}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
