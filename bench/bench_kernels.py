"""CPU custom-call benchmark (secoustic_jax.kernels) against XLA's float32 dots.

    .venv/bin/python bench/bench_kernels.py [--repeats 3] [--calls 15]

Shapes of the streaming steps (full presets, d = 512, FFN 2048, 8 heads x 64, 250-slot
rings), each as a jitted chain of the layers of one token step so that the weights and
rings come from memory, not cache (64 MB of bf16 weights, 24 rings):
- mat-vec: 16 x ([M, 512] @ [512, 2048] then [M, 2048] @ [2048, 512]) for M = 1 .. 16
  streams: XLA float32 vs `bf16_matvec` (row stream at M = 1, threaded tiles at M >= 2);
- ring attention: 24 layers of scores -> softmax -> weighted values at batch 1 and 16:
  XLA float32 rings vs `bf16_scores` / `bf16_mix` on bf16 rings.
Medians over `--calls` calls, repeated `--repeats` times interleaved (median, min, max of
the repeat medians). Writes bench/results/kernels.json with the machine description.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_streaming import describe_machine, write_result  # noqa: E402 - beside this script

LAYERS = 16  # mat-vec chain: 2 products per layer
RINGS = 24  # token path: encoder, connector and decoder stacks x 8 layers


def _time(fns: dict, args: dict, repeats: int, calls: int) -> dict:
    """Interleaved medians: {name: {median_ms, min_ms, max_ms}} over repeat medians."""
    meds = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            f(*args[k]).block_until_ready()
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                f(*args[k]).block_until_ready()
                ts.append(time.perf_counter() - t0)
            meds[k].append(float(np.median(ts)) * 1e3)
    return {k: {"median_ms": round(float(np.median(v)), 3), "min_ms": round(min(v), 3),
                "max_ms": round(max(v), 3)} for k, v in meds.items()}


def bench_matvec(ms, repeats, calls) -> list[dict]:
    import jax
    import jax.numpy as jnp
    from secoustic_jax import kernels
    rng = np.random.default_rng(0)
    w1 = [rng.standard_normal((512, 2048), np.float32) / 22.6 for _ in range(LAYERS)]
    w2 = [rng.standard_normal((2048, 512), np.float32) / 45.3 for _ in range(LAYERS)]
    f32 = ([jnp.asarray(w) for w in w1], [jnp.asarray(w) for w in w2])
    b16 = tuple([w.astype(jnp.bfloat16) for w in ws] for ws in f32)

    def chain(dot):
        def run(x, a, b):
            for i in range(LAYERS):
                x = jnp.tanh(dot(dot(x, a[i]), b[i]))
            return x
        return jax.jit(run)

    fns = {"xla_float32": chain(jnp.dot), "bf16_matvec": chain(kernels.bf16_matvec)}
    params = 2 * LAYERS * 512 * 2048
    rows = []
    for m in ms:
        x = jnp.asarray(rng.standard_normal((m, 512), np.float32))
        res = _time(fns, {"xla_float32": (x, *f32), "bf16_matvec": (x, *b16)}, repeats, calls)
        for name, r in res.items():
            nbytes = params * (4 if name == "xla_float32" else 2)
            r.update(gb_per_s=round(nbytes / r["median_ms"] / 1e6, 1),
                     gflop_per_s=round(2 * params * m / r["median_ms"] / 1e6, 1))
        rows.append({"streams": m, **res})
        print(f"  mat-vec M={m}: {res}", flush=True)
    return rows


def bench_rings(batches, repeats, calls) -> list[dict]:
    import jax
    import jax.numpy as jnp
    from secoustic_jax import kernels
    rng = np.random.default_rng(1)

    def chain(scores, mix):
        def run(q, ks, vs):
            for k, v in zip(ks, vs):
                q = mix(jax.nn.softmax(scores(q, k) * 0.125, axis=-1), v)
            return q
        return jax.jit(run)

    fns = {"xla_float32": chain(lambda q, k: jnp.einsum("gqd,gkd->gqk", q, k),
                                lambda p, v: jnp.einsum("gqk,gkd->gqd", p, v)),
           "bf16_ring_kernels": chain(kernels.bf16_scores, kernels.bf16_mix)}
    rows = []
    for b in batches:
        g = 8 * b
        k32 = [jnp.asarray(rng.standard_normal((g, 250, 64), np.float32)) for _ in range(RINGS)]
        v32 = [jnp.asarray(rng.standard_normal((g, 250, 64), np.float32)) for _ in range(RINGS)]
        bits = [[jax.lax.bitcast_convert_type(a.astype(jnp.bfloat16), jnp.uint16) for a in r]
                for r in (k32, v32)]
        q = jnp.asarray(rng.standard_normal((g, 1, 64), np.float32))
        res = _time(fns, {"xla_float32": (q, k32, v32), "bf16_ring_kernels": (q, *bits)},
                    repeats, calls)
        for name, r in res.items():
            nbytes = 2 * RINGS * g * 250 * 64 * (4 if name == "xla_float32" else 2)
            r["gb_per_s"] = round(nbytes / r["median_ms"] / 1e6, 1)
        rows.append({"batch": b, **res})
        print(f"  rings batch {b}: {res}", flush=True)
    return rows


def _table(result: dict) -> list[dict]:
    rows = []
    for r in result["matvec"]:
        x, k = r["xla_float32"], r["bf16_matvec"]
        rows.append({"what": f"kernel bf16_matvec, {r['streams']} stream(s), 32 products",
                     "value": f"{k['median_ms']} ms ({k['gb_per_s']} GB/s, "
                              f"{k['gflop_per_s']} GFLOP/s)",
                     "reference": f"XLA float32 {x['median_ms']} ms",
                     "note": f"{x['median_ms'] / k['median_ms']:.2f}x"})
    for r in result["rings"]:
        x, k = r["xla_float32"], r["bf16_ring_kernels"]
        rows.append({"what": f"kernel bf16 ring attention, batch {r['batch']}, 24 layers",
                     "value": f"{k['median_ms']} ms ({k['gb_per_s']} GB/s)",
                     "reference": f"XLA float32 rings {x['median_ms']} ms",
                     "note": f"{x['median_ms'] / k['median_ms']:.2f}x"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--quick", action="store_true", help="1 repeat of 5 calls, M = 1 and 16")
    ap.add_argument("--out", default=str(ROOT / "bench/results/kernels.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.calls, args.streams = 1, 5, [1, 16]
    from secoustic_jax import kernels
    kernels.load()
    result = {"machine": describe_machine(), "command": " ".join(["bench/bench_kernels.py"] + (argv or sys.argv[1:])),
              "matvec": bench_matvec(args.streams, args.repeats, args.calls),
              "rings": bench_rings(args.batches, args.repeats, args.calls)}
    result["table"] = _table(result)
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
