"""Per-module CPU profile of the codec (both presets) and the HiFT vocoder, 10 s of input.

    .venv/bin/python bench/bench_profile.py [--presets 86hz 21_5hz] [--repeats 5]
        [--frames 861] [--no-hift] [--only NAME ...] [--out bench/results/profile.json]

Random PyTorch-default weights, batch 1, float32; the `*_bf16` rows are the opt-in
bf16-matmul codec (`Codec(matmul_dtype="bfloat16")`) and `hift_bf16conv` the opt-in bf16
vocoder convs, beside the same official float32 figure. Every timed function is one `jax.jit`
of `module.apply` on fixed shapes: one warm-up call (compile, reported separately), then
`repeats` rounds in which every function is called once (interleaved, so that load changes
on a shared machine hit all of them alike). Reported per function: median wall seconds,
median process-CPU seconds (robust to other processes on the cores; on an idle machine
wall ~ cpu / cores when XLA keeps every core busy), the model FLOPs of `flops.py`, the
FLOPs of the compiled HLO (`cost_analysis`) and model GFLOP per CPU-second.
The official PyTorch figures (evaluation.md §8) are stored next to the results.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

OFFICIAL_MS = {  # evaluation.md §8, torch 2.13 CPU, 2 threads, 10 s, median of 5
    "86hz": {"encode": 954, "decode_tokens": 960, "decode_acoustic": 509},
    "21_5hz": {"encode": 287, "decode_tokens": 271, "decode_acoustic": 135},
    "hift": {"hift": 4327},
}


def _codec_functions(preset: str, frames: int) -> dict:
    """{name: (jitted fn, args, model FLOPs)} for the codec modules and entry points."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from secoustic_jax import flops
    from secoustic_jax.api import init_variables
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.model.codec import SecoustiCodec

    cfg = codec_preset(preset)
    module = SecoustiCodec(cfg)
    variables = init_variables(cfg, seed=0)
    tokens = cfg.num_tokens(frames)
    d = cfg.transformer.d_model
    key = jax.random.PRNGKey(0)
    mel = jax.random.normal(key, (1, frames, cfg.mel.n_mels), jnp.float32)
    lat = jax.random.normal(key, (1, tokens, d), jnp.float32)
    tok = jax.random.randint(key, (1, tokens), 0, cfg.codebook_size, jnp.int32)
    g = jax.random.normal(key, (1, d), jnp.float32)
    f = flops.codec_forward(cfg, frames)
    inf = flops.inference(cfg, frames)

    from secoustic_jax.streaming import lowp

    def fn(method):
        return jax.jit(lambda v, *a: module.apply(v, *a, method=method))

    def bf16(method):  # Codec(matmul_dtype="bfloat16"): bf16 stack weights and dots
        def call(v, *a):
            with lowp.bf16_dots():
                return module.apply(v, *a, method=method)
        return jax.jit(call)

    vb = lowp.bf16_weights(variables)
    del nn
    return {
        "seanet_encoder": (fn(lambda m, x: m.encoder(x)), (variables, mel), f.encoder),
        "encoder_transformer": (fn(lambda m, x: m.encoder_transformer(x)), (variables, lat),
                                f.encoder_transformer),
        "semantic_mu": (fn(lambda m, x: m.vae_semantic_transformer.mu(x)), (variables, lat),
                        f.semantic),
        "connector": (fn(lambda m, s, g: m.semantic_connector(s, g)), (variables, lat, g),
                      f.connector),
        "seanet_decoder": (fn(lambda m, x: m.decoder(x)), (variables, lat), f.decoder),
        "encode": (fn("encode"), (variables, mel), inf["encode"]),
        "encode_tokens": (fn("encode_tokens"), (variables, mel), inf["encode_tokens"]),
        "decode_tokens": (fn("decode_tokens"), (variables, tok, g), inf["decode_tokens"]),
        "decode_acoustic": (fn("decode_acoustic"), (variables, lat), inf["decode_acoustic"]),
        "encode_bf16": (bf16("encode"), (vb, mel), inf["encode"]),
        "decode_tokens_bf16": (bf16("decode_tokens"), (vb, tok, g), inf["decode_tokens"]),
    }


def hift_model_flops(cfg, frames: int) -> float:
    """Forward FLOPs of HiFT (2 per MAC), transposed convs counted per input tap."""
    conv = lambda n, k, a, b: 2.0 * n * k * a * b  # noqa: E731
    total = conv(frames, 3, cfg.in_channels, cfg.f0_cond_channels)
    total += (cfg.f0_num_layers - 1) * conv(frames, 3, cfg.f0_cond_channels, cfg.f0_cond_channels)
    total += conv(frames, 7, cfg.in_channels, cfg.base_channels)
    n, c = frames, cfg.base_channels
    n_src = frames * cfg.hop_length // cfg.istft_hop + 1
    bins = cfg.istft_n_fft + 2
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        total += conv(n, k, c, c // 2)
        n, c = n * u + (1 if i == len(cfg.upsample_rates) - 1 else 0), c // 2
        dk = cfg.source_down_geometry(i)[0]
        total += conv(n, dk, bins, c)
        for ks, ds in [(cfg.source_resblock_kernel_sizes[i], cfg.source_resblock_dilation_sizes[i])] + \
                list(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            total += 2 * len(ds) * conv(n, ks, c, c)
    del n_src
    return total + conv(n, 7, c, bins)


def _hift_functions(frames: int) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from secoustic_jax.config.hift import HiFTConfig
    from secoustic_jax.model.hift import HiFT

    cfg = HiFTConfig()
    model = HiFT(cfg)
    mel = jax.random.normal(jax.random.PRNGKey(0), (1, frames, cfg.in_channels), jnp.float32)
    variables = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), mel))
    f0 = jnp.abs(jax.random.normal(jax.random.PRNGKey(1), (1, frames))) * 200.0
    s = jax.random.normal(jax.random.PRNGKey(2), (1, frames * cfg.hop_length)) * 0.1
    from secoustic_jax.model.hift_bf16 import bf16_convs

    fn = lambda method: jax.jit(lambda v, *a: model.apply(v, *a, method=method))  # noqa: E731

    def bf16(method):  # Vocoder(conv_dtype="bfloat16")
        def call(v, *a):
            with bf16_convs():
                return model.apply(v, *a, method=method)
        return jax.jit(call)

    return {
        "hift_f0": (fn("predict_f0"), (variables, mel), None),
        "hift_excitation": (fn("excitation"), (variables, f0), None),
        "hift_decode": (fn("decode"), (variables, mel, s), None),
        "hift": (fn("__call__"), (variables, mel), hift_model_flops(cfg, frames)),
        "hift_bf16conv": (bf16("__call__"), (variables, mel), hift_model_flops(cfg, frames)),
    }


def _xla_flops(fn, args) -> float:
    analysis = fn.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def profile(groups: dict, repeats: int) -> dict:
    """groups: {group: {name: (fn, args, flops)}} -> results, all functions interleaved."""
    import jax

    flat = [(gname, name, *spec) for gname, fns in groups.items() for name, spec in fns.items()]
    res = {}
    for gname, name, fn, args, model_flops in flat:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        res[(gname, name)] = {"warmup_s": time.perf_counter() - t0, "wall": [], "cpu": [],
                              "model_gflop": None if model_flops is None else model_flops / 1e9,
                              "xla_gflop": _xla_flops(fn, args) / 1e9}
    for _ in range(repeats):
        for gname, name, fn, args, _f in flat:
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*args))
            res[(gname, name)]["wall"].append(time.perf_counter() - t0)
            res[(gname, name)]["cpu"].append(time.process_time() - c0)
    out: dict = {}
    for (gname, name), r in res.items():
        r["wall_median_s"] = statistics.median(r["wall"])
        r["cpu_median_s"] = statistics.median(r["cpu"])
        if r["model_gflop"]:
            r["model_gflop_per_cpu_s"] = r["model_gflop"] / r["cpu_median_s"]
        # The bf16 rows are compared with the same official (float32) figure.
        official = OFFICIAL_MS.get(gname, {}).get(name.replace("_bf16conv", "").replace("_bf16", ""))
        if official:
            r["official_torch_s"] = official / 1000
        out.setdefault(gname, {})[name] = r
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="*", default=["86hz", "21_5hz"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=861)
    ap.add_argument("--no-hift", action="store_true")
    ap.add_argument("--only", nargs="*", help="function names to keep (default: all)")
    ap.add_argument("--out", default="bench/results/profile.json")
    a = ap.parse_args(argv)
    import jax

    groups = {p: _codec_functions(p, a.frames) for p in a.presets}
    if not a.no_hift:
        groups["hift"] = _hift_functions(a.frames)
    if a.only:
        groups = {g: {n: s for n, s in fns.items() if n in a.only} for g, fns in groups.items()}
    results = profile(groups, a.repeats)
    for gname, fns in results.items():
        for name, r in fns.items():
            extra = f" (torch {r['official_torch_s']:.3f})" if "official_torch_s" in r else ""
            print(f"{gname:8s} {name:20s} wall {r['wall_median_s']:.3f} cpu "
                  f"{r['cpu_median_s']:.3f} xla {r['xla_gflop']:.1f} GF{extra}", flush=True)
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from bench_streaming import describe_machine  # noqa: E402 - beside this script

    meta = {"benchmark": "profile", "frames": a.frames, "batch": 1, "repeats": a.repeats,
            "dtype": "float32", "jax": jax.__version__, "device": str(jax.devices()[0]),
            "machine": describe_machine(), "cores": len(os.sched_getaffinity(0)),
            "loadavg_start": os.getloadavg(), "argv": sys.argv[1:]}
    path = pathlib.Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
