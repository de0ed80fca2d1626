"""Same-machine calibration of the official PyTorch figures: one full-size transformer stack.

    .venv/bin/python bench/bench_torch_reference.py [--repeats 5] [--threads 2]
        [--out bench/results/torch_reference.json]

The official figures (evaluation.md §8) come from "this machine kind", but VMs of one kind
differ (this project's have been Zen 4 and Zen 5 EPYCs). The official code is not
available offline; its transformer maths is, in torch ops, as the parity reference of
tests/test_transformer.py (`torch_stack`: dense masked SDPA, fused in_proj, exact GELU).
The four stacks are ~97 % of the codec's FLOPs (flops.py), so timing one stack here in
torch (2 threads, no grad) and in JAX, on the same random weights and input, says how far
the hardware moved the reference: official encode = 2 stacks + SEANet, decode_tokens =
2 stacks + SEANet. Reports medians over `repeats` after one warm-up call, per preset
(T = 861 tokens at 86 Hz, 216 at 21.5 Hz), and the official figure each implies per stack.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
OFFICIAL_ENCODE_S = {"86hz": 0.954, "21_5hz": 0.287}  # evaluation.md §8: 2 stacks + SEANet


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/torch_reference.json")
    args = ap.parse_args(argv)

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_streaming import describe_machine, write_result
    from test_transformer import torch_stack  # the official layer maths in torch

    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.layers.transformer import ProjectedTransformer

    torch.set_num_threads(args.threads)
    rows = {}
    for preset, frames in (("86hz", 861), ("21_5hz", 861)):
        cfg = codec_preset(preset)
        t = cfg.num_tokens(frames)
        x = np.random.default_rng(0).standard_normal((1, t, cfg.transformer.d_model)).astype(np.float32)
        stack = ProjectedTransformer(cfg.transformer)
        params = nn.meta.unbox(jax.jit(stack.init)(jax.random.PRNGKey(0), jnp.asarray(x)))
        fn = jax.jit(stack.apply)
        jax_s = _median(lambda: fn(params, x).block_until_ready(), args.repeats)
        with torch.inference_mode():
            ref = torch_stack(x, params, cfg.transformer)
            torch_s = _median(lambda: torch_stack(x, params, cfg.transformer), args.repeats)
        rows[preset] = {
            "tokens": t, "jax_stack_s": jax_s, "torch_stack_s": torch_s,
            "speedup_same_machine": torch_s / jax_s,
            "official_encode_s": OFFICIAL_ENCODE_S[preset],
            "official_per_stack_s_upper": OFFICIAL_ENCODE_S[preset] / 2,
            "torch_vs_official_per_stack": torch_s / (OFFICIAL_ENCODE_S[preset] / 2),
            "max_abs_diff": float(np.abs(np.asarray(fn(params, x)) - ref).max())}
        print(preset, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[preset].items()})
    write_result({
        "benchmark": "torch_reference", "repeats": args.repeats, "torch_threads": args.threads,
        "torch": torch.__version__, "results": rows, "machine": describe_machine(),
        "command": "bench/bench_torch_reference.py " + " ".join(
            argv if argv is not None else sys.argv[1:])}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
