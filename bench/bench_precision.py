"""What the opt-in bf16 codec (`Codec(matmul_dtype="bfloat16")`) changes against float32.

    .venv/bin/python bench/bench_precision.py [--trained-ckpt demo/work/train]
        [--trained-manifest cache/demo_corpus/test.jsonl] [--utterances 8]
        [--out bench/results/precision.json]

Token change rate of `encode_tokens` and the largest mel difference of `decode_tokens`
(same tokens and paralinguistic vector), on random full-size weights (both presets, 10 s
of random mel) and on the trained tiny checkpoint that `make demo` leaves (its test
utterances; skipped with a reason when it is missing). Trained tokens sit nearer the FSQ
rounding boundaries than random ones, so both are reported. The bf16 vocoder's waveform
SNR is in bench/results/vocoder.json (`bench_vocoder.py`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def _compare(c32, cb, mels) -> dict:
    import numpy as np

    changed = total = 0
    mel_err = mel_scale = 0.0
    for mel in mels:
        a, b = c32.encode_tokens(mel), cb.encode_tokens(mel)
        changed, total = changed + int(np.sum(a != b)), total + a.size
        g = c32.prompt_embedding(mel)
        m32, mb = c32.decode_tokens(a, g), cb.decode_tokens(a, g)
        mel_err = max(mel_err, float(np.abs(m32 - mb).max()))
        mel_scale = max(mel_scale, float(np.abs(m32).max()))
    return {"tokens": total, "changed": changed, "change_rate": changed / total,
            "decode_mel_max_abs_diff": mel_err, "decode_mel_max_abs": mel_scale}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trained-ckpt", default="demo/work/train")
    ap.add_argument("--trained-manifest", default="cache/demo_corpus/test.jsonl")
    ap.add_argument("--utterances", type=int, default=8)
    ap.add_argument("--out", default="bench/results/precision.json")
    args = ap.parse_args(argv)

    import numpy as np

    from secoustic_jax.api import Codec
    from secoustic_jax.audio.io import load_audio
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.training.export import codec_variables_from_checkpoint

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from bench_streaming import describe_machine, write_result  # noqa: E402 - beside this script

    results = {}
    mel = np.random.default_rng(0).standard_normal((861, 80)).astype(np.float32)
    for preset in ("86hz", "21_5hz"):
        c32 = Codec.init(codec_preset(preset), seed=0)
        cb = Codec(c32.config, c32.variables, matmul_dtype="bfloat16")
        results[f"random_{preset}"] = _compare(c32, cb, [mel])
    found = (codec_variables_from_checkpoint(args.trained_ckpt)
             if pathlib.Path(args.trained_ckpt).exists() else None)
    manifest = pathlib.Path(args.trained_manifest)
    if found is None or not manifest.exists():
        results["trained"] = {"skipped": f"no training checkpoint at {args.trained_ckpt} or no "
                                         f"manifest {manifest} (run `make demo` first)"}
    else:
        cfg, variables = found
        c32, cb = Codec(cfg, variables), Codec(cfg, variables, matmul_dtype="bfloat16")
        rows = [json.loads(line) for line in open(manifest)][:args.utterances]
        mels = [c32.mel(*load_audio(manifest.parent / r["audio"])) for r in rows]
        results["trained"] = {"checkpoint": args.trained_ckpt, "config": cfg.variant,
                              "utterances": len(rows), **_compare(c32, cb, mels)}
    for k, v in results.items():
        print(k, json.dumps(v))
    write_result({"benchmark": "precision", "mode": "matmul_dtype=bfloat16", "results": results,
                  "machine": describe_machine(),
                  "command": "bench/bench_precision.py " + " ".join(
                      argv if argv is not None else sys.argv[1:])}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
