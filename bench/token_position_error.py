"""Token-path mel error by position in the utterance, and with the utterance cut into
pieces decoded separately: does the network hold up past its training crop length?

    python bench/token_position_error.py demo/work/train --out bench/results/token_position_demo.json

For each of the first `--limit` utterances of a split (sorted by id), with the utterance's
own G: `full` = mel MSE of the whole-utterance token path; `block_<a>_<b>` = the same decode
over frames [a, b); `chunked` = every `--block`-frame piece encoded and decoded on its own
(fresh attention state), the error a network with no long-context failure would at most
show. full >> chunked, growing with position, means the attention never trained on the
distances or the full sliding window that inference uses (docs/training.md, "Crop length
of the token-path stages").
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ab_recipe import _utterances, write_json  # noqa: E402  (bench/ is not a package)


def position_errors(codec, utts, block: int, blocks: int) -> dict:
    """{full, chunked, block_<a>_<b>...}: means over utterances (see the module docstring)."""
    full, chunked, by_block = [], [], [[] for _ in range(blocks)]
    for _, mel in utts:
        g = codec.prompt_embedding(mel[None])
        err = np.mean((codec.decode_tokens(codec.encode_mel(mel[None]).tokens, g)[0] - mel) ** 2,
                      axis=1)
        full.append(err.mean())
        for k in range(blocks):
            if err[k * block:(k + 1) * block].size:
                by_block[k].append(err[k * block:(k + 1) * block].mean())
        pieces = []
        for s in range(0, mel.shape[0], block):
            piece = mel[s:s + block]
            rec = codec.decode_tokens(codec.encode_mel(piece[None]).tokens, g)[0]
            pieces.append(np.mean((rec - piece) ** 2, axis=1))
        chunked.append(np.concatenate(pieces).mean())
    out = {"full": float(np.mean(full)), "chunked": float(np.mean(chunked))}
    for k, v in enumerate(by_block):
        if v:
            out[f"block_{k * block}_{(k + 1) * block}"] = float(np.mean(v))
            out[f"block_{k * block}_{(k + 1) * block}_utterances"] = len(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="training workdir (latest step) or codec directory")
    ap.add_argument("--corpus", default="cache/demo_corpus")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--block", type=int, default=128, help="frames per block / piece")
    ap.add_argument("--blocks", type=int, default=4, help="position blocks reported")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from secoustic_jax.eval.checkpoints import load_codec

    codec, _ = load_codec(args.checkpoint)
    if codec.config.hop != 1:
        raise SystemExit("token_position_error: 86 Hz (hop 1) codecs only: blocks are mel frames")
    utts = _utterances(pathlib.Path(args.corpus), args.split, args.limit)
    res = {"checkpoint": str(args.checkpoint), "split": args.split, "utterances": len(utts),
           "block": args.block, "machine": platform.processor() or platform.machine(),
           **position_errors(codec, utts, args.block, args.blocks)}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
