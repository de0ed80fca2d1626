"""How Griffin-Lim + WB-PESQ answer a log-mel contrast change, on the reference mel too.

    python bench/gl_contrast.py reports/small/work/train \
        --manifest cache/demo_corpus/test.jsonl --per-speaker 4 \
        --out bench/results/gl_contrast.json

For each utterance of the test set (eval.py's E2 selection: the first `--per-speaker` of
each voice, in manifest order) and each of three mels (the input's own log-mel, which is
the vocoder ceiling of the report; the acoustic path D(A); the token path D(C(S + G)) with
the utterance's own G), the mel's deviation from its time mean is scaled per bin,
mel' = mean_t(mel) + s * (mel - mean_t(mel)), s in `--scales`, and scored exactly as
eval.py scores a condition (the same `scoring.Job`: Griffin-Lim with seed 0, WB-PESQ and
STOI at 16 kHz against the input). s = 1 is what eval.py reports.

What it answers: whether a gain of a codec output under s > 1 says the codec blurs the
mel (it would not help the reference) or that the fallback vocoder and the metric reward
a wider contrast whatever the mel (it helps the reference as much).
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ab_recipe import write_json  # noqa: E402  (bench/ is not a package)

PATHS = ("reference", "acoustic", "token")


def contrast(mel: np.ndarray, scale: float) -> np.ndarray:
    """mel [T, 80] -> its deviation from the per-bin time mean, times `scale`."""
    mean = mel.mean(axis=0, keepdims=True)
    return (mean + scale * (mel - mean)).astype(np.float32)


def path_mels(out) -> dict[str, np.ndarray]:
    """The three mels of one `CodecOutputs`, cut to the codec's output length."""
    t = out.mel_token.shape[0]
    return {"reference": out.mel[:t], "acoustic": out.mel_acoustic[:t], "token": out.mel_token}


def summarise(scored: dict, n: int) -> dict:
    """{(path, scale, i): metrics} -> {path: {scale: {"pesq_wb", "stoi"} means over n}}."""
    out: dict = {}
    for (path, scale, _), m in scored.items():
        cell = out.setdefault(path, {}).setdefault(f"{scale:g}", {"pesq_wb": [], "stoi": []})
        cell["pesq_wb"].append(m["pesq_wb"])
        cell["stoi"].append(m["stoi"])
    for cells in out.values():
        for cell in cells.values():
            if len(cell["pesq_wb"]) != n:
                raise RuntimeError(f"expected {n} scores per cell, got {len(cell['pesq_wb'])}")
            for k in ("pesq_wb", "stoi"):
                cell[k] = float(np.nanmean(cell[k]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="training workdir or checkpoint (eval/checkpoints.py)")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--per-speaker", type=int, default=4)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.15, 1.3])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if 1.0 not in args.scales:
        ap.error("--scales must include 1 (what eval.py reports)")

    from secoustic_jax.eval import scoring
    from secoustic_jax.eval.checkpoints import load_codec
    from secoustic_jax.eval.codec_run import run_codec
    from secoustic_jax.eval.testset import from_manifest

    codec, _ = load_codec(args.ckpt)
    ts = from_manifest(args.manifest, per_speaker=args.per_speaker)
    outs = run_codec(codec, [u.wav for u in ts.utterances])
    jobs = [scoring.Job((path, s, i), u.ref16, u.num_samples, mel=contrast(mel, s))
            for i, (u, o) in enumerate(zip(ts.utterances, outs))
            for path, mel in path_mels(o).items() for s in args.scales]
    with scoring.Scorer(args.workers) as scorer:
        scored = {r.key: r.metrics for r in scorer.map(jobs)}
    res = {"ckpt": str(args.ckpt), "manifest": str(args.manifest), "utterances": len(ts),
           "per_speaker": args.per_speaker, "scales": args.scales, "vocoder": "griffin-lim seed 0",
           "machine": platform.machine(), "means": summarise(scored, len(ts))}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
