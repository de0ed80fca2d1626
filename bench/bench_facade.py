"""What the numpy `Codec` facade costs over a module-level jit of the same entry point.

    .venv/bin/python bench/bench_facade.py [--presets 86hz 21_5hz] [--seconds 10] [--repeats 7]
        [--out bench/results/facade.json]

Random weights (`init_variables`, seed 0), batch 1, float32, 10 s of input. For each entry
point (`encode_mel` = the `encode` method, `encode_tokens`, `decode_tokens`) three rows,
interleaved round by round so that load changes hit all alike:

- `facade`: the `Codec` method, numpy in and numpy out (validation, bucket padding,
  lengths, device transfers, the cut back to the valid length);
- `jit_bucket`: the module-level jit at the facade's bucketed length, arrays on device;
- `jit_exact`: the module-level jit at the exact length (what `bench_profile` times).

`facade / jit_exact` is the whole overhead; `facade / jit_bucket` is the host work alone;
`jit_bucket / jit_exact` is the padding to the bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _functions(preset: str, seconds: float) -> dict:
    """{entry point: {row: thunk}} for one preset."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from secoustic_jax.api import Codec, bucket_length, init_variables
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.model.codec import SecoustiCodec

    cfg = codec_preset(preset)
    variables = init_variables(cfg, seed=0)
    codec = Codec(cfg, variables)
    module = SecoustiCodec(cfg)
    frames = int(round(seconds * cfg.mel.sample_rate / cfg.mel.hop_length))
    n_tok = cfg.num_tokens(frames)
    bucket = bucket_length(n_tok)
    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((1, frames, 80)) - 5).astype(np.float32)
    tokens = rng.integers(0, cfg.codebook_size, (1, n_tok)).astype(np.int32)
    g = rng.standard_normal((1, cfg.transformer.d_model)).astype(np.float32)
    v = codec.variables

    def jit(method):
        return jax.jit(lambda v, *a: module.apply(v, *a, method=method))

    enc, enc_tok, dec = jit("encode"), jit("encode_tokens"), jit("decode_tokens")
    mel_exact = jnp.asarray(mel)
    mel_bucket = jnp.asarray(np.pad(mel, ((0, 0), (0, cfg.hop * bucket - frames), (0, 0))))
    lens = jnp.asarray([frames], jnp.int32)
    tok_exact = jnp.asarray(tokens)
    tok_bucket = jnp.asarray(np.pad(tokens, ((0, 0), (0, bucket - n_tok)),
                                    constant_values=(cfg.codebook_size - 1) // 2))
    gj = jnp.asarray(g)
    return {
        "encode_mel": {"facade": lambda: codec.encode_mel(mel).tokens,
                       "jit_bucket": lambda: enc(v, mel_bucket, lens),
                       "jit_exact": lambda: enc(v, mel_exact)},
        "encode_tokens": {"facade": lambda: codec.encode_tokens(mel),
                          "jit_bucket": lambda: enc_tok(v, mel_bucket, lens),
                          "jit_exact": lambda: enc_tok(v, mel_exact)},
        "decode_tokens": {"facade": lambda: codec.decode_tokens(tokens, g),
                          "jit_bucket": lambda: dec(v, tok_bucket, gj),
                          "jit_exact": lambda: dec(v, tok_exact, gj)},
    }, {"frames": frames, "tokens": n_tok, "bucket_tokens": bucket}


def run(preset: str, seconds: float, repeats: int) -> dict:
    import jax

    fns, shape = _functions(preset, seconds)
    flat = {(e, r): f for e, rows in fns.items() for r, f in rows.items()}
    for f in flat.values():  # compile
        jax.block_until_ready(f())
    times = {k: [] for k in flat}
    for _ in range(repeats):
        for k, f in flat.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    out = {"shape": shape, "entry_points": {}}
    for entry in fns:
        med = {r: statistics.median(times[(entry, r)]) for r in fns[entry]}
        out["entry_points"][entry] = {
            **{f"{r}_s": m for r, m in med.items()},
            "facade_over_jit_exact": med["facade"] / med["jit_exact"],
            "facade_over_jit_bucket": med["facade"] / med["jit_bucket"],
            "bucket_over_exact": med["jit_bucket"] / med["jit_exact"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["86hz", "21_5hz"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench/results/facade.json"))
    a = ap.parse_args(argv)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "")
    family = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("cpu family")), "")
    result = {"machine": {"cpu": cpu, "cpu_family": family, "cores": os.cpu_count(),
                          "loadavg_start": os.getloadavg()},
              "settings": vars(a), "presets": {}}
    for preset in a.presets:
        result["presets"][preset] = r = run(preset, a.seconds, a.repeats)
        for entry, row in r["entry_points"].items():
            print(f"{preset:7s} {entry:14s} facade {row['facade_s']:.3f} s  jit@bucket "
                  f"{row['jit_bucket_s']:.3f}  jit@exact {row['jit_exact_s']:.3f}  "
                  f"facade/exact {row['facade_over_jit_exact']:.3f}", flush=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
