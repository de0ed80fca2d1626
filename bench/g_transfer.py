"""Which G decodes an unseen voice best: its own, or a training speaker's?

    python bench/g_transfer.py reports/small/work/train --out bench/results/g_transfer_small_591fd77.json

For the first `--limit` utterances of `--split` (default: the held-out voice), the token
path's full-utterance mel MSE with G from (a) the utterance itself and (b) the mean G of
each speaker of `--reference` (default: valid, seen voices). If some training speaker's G
beats the utterance's own, the paralinguistic encoder maps the new voice off the manifold
the connector was trained on: G does not generalise, whatever the tokens carry. If every G
gives about the same error, the connector ignores G and the error is in the tokens.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ab_recipe import _utterances, write_json  # noqa: E402  (bench/ is not a package)


def transfer_errors(codec, utts, reference) -> dict:
    """{"own": mse, "<speaker>": mse with that speaker's mean G, ...}: means over utts."""
    by_spk: dict[str, list[np.ndarray]] = {}
    for spk, mel in reference:
        by_spk.setdefault(spk, []).append(np.asarray(codec.prompt_embedding(mel[None])[0]))
    hop = codec.config.hop
    errs: dict[str, list[float]] = {}
    for _, mel in utts:
        t = mel.shape[0] // hop * hop
        mel = mel[:t]
        tokens = codec.encode_mel(mel[None]).tokens
        cands = {"own": np.asarray(codec.prompt_embedding(mel[None])[0]),
                 **{s: np.mean(g, axis=0) for s, g in sorted(by_spk.items())}}
        for name, g in cands.items():
            rec = np.asarray(codec.decode_tokens(tokens, g[None]))[0, :t]
            errs.setdefault(name, []).append(float(np.mean((rec - mel) ** 2)))
    return {k: float(np.mean(v)) for k, v in errs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="training workdir (latest step) or codec directory")
    ap.add_argument("--corpus", default="cache/demo_corpus")
    ap.add_argument("--split", default="test_unseen")
    ap.add_argument("--reference", default="valid", help="split whose speakers' G are tried")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--reference-limit", type=int, default=60)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from secoustic_jax.eval.checkpoints import load_codec

    codec, _ = load_codec(args.checkpoint)
    corpus = pathlib.Path(args.corpus)
    utts = _utterances(corpus, args.split, args.limit)
    errs = transfer_errors(codec, utts, _utterances(corpus, args.reference, args.reference_limit))
    best = min((k for k in errs if k != "own"), key=errs.get)
    res = {"checkpoint": str(args.checkpoint), "split": args.split, "utterances": len(utts),
           "reference": args.reference, "machine": platform.processor() or platform.machine(),
           "own": errs["own"], "best_other": best, "best_other_mse": errs[best],
           "by_speaker": {k: v for k, v in errs.items() if k != "own"}}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
