"""One short accelerator check (fits in 8 minutes on one chip): train-step time and MFU at
the paper batch, offline encode/decode throughput, streaming step latency, peak memory.

    python bench/device_check.py --out bench/results/device_check.json       # on the device
    python bench/device_check.py --quick --out /tmp/device_check.json        # CPU, tiny shapes

Train steps: both presets (86hz, 21_5hz), stage 1 and stage 2, float32 and bfloat16
(`codec.compute_dtype`), at the paper batch 32 x 256 frames on synthetic batches (the
pipeline's shapes). MFU = model FLOPs (`secoustic_jax/flops.py`, codec only: the phoneme
encoder of stage 2 is not counted, so stage-2 MFU reads a little low) / step time / peak,
against the chip's dense bf16 peak from PEAK_TFLOPS (by device kind) and against a
measured matmul rate of the same dtype. Memory: `compiled.memory_analysis()` per step and
the device's own peak counter where it has one. The JSON records the device, the
versions and every setting.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {"86hz": "configs/86hz.py", "21_5hz": "configs/21_5hz.py", "tiny": "configs/tiny.py"}
# Dense bf16 peak, TFLOP/s, per chip (vendor figures, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0,
               "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
               "TPU v4": 275.0, "TPU v6 lite": 918.0, "TPU v6e": 918.0}


def chip_peak(kind: str) -> float | None:
    """FLOP/s of the longest PEAK_TFLOPS key found in the device kind, or None."""
    hits = [k for k in PEAK_TFLOPS if k.lower() in kind.lower()]
    return 1e12 * PEAK_TFLOPS[max(hits, key=len)] if hits else None


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    import jax
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def matmul_rate(dtype: str, n: int, repeats: int = 5) -> float:
    """Measured FLOP/s of an [n, n] @ [n, n] matmul in `dtype` (float32 accumulation)."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    mm = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    mm(a).block_until_ready()
    return 2.0 * n ** 3 / _median_time(lambda: mm(a), repeats)[0]


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes")
    out = {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}
    if out:
        out["peak_estimate_bytes"] = (out.get("argument_size_in_bytes", 0)
                                      + out.get("output_size_in_bytes", 0)
                                      + out.get("temp_size_in_bytes", 0)
                                      - out.get("alias_size_in_bytes", 0))
    return out


def train_row(preset: str, stage: int, dtype: str, batch: int, frames: int, steps: int,
              peaks: dict) -> dict:
    """Compile and time one (preset, stage, dtype) train step on synthetic batches."""
    import jax

    from secoustic_jax import flops
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training import runtime as rtm, sharding as shd
    from secoustic_jax.training.data import SyntheticSource
    from secoustic_jax.training.loop import resolve_config
    from secoustic_jax.training.model import TrainNet

    name = ("acoustic", "semantic")[stage - 1]
    cfg = load_experiment(REPO / PRESETS[preset], {
        "data.kind": "synthetic", f"stages.{name}.batch_size": batch,
        f"stages.{name}.segment_frames": frames, "data.pipeline.max_phones": 64,
        "codec.compute_dtype": dtype})
    cfg, _ = resolve_config(cfg)
    net = TrainNet(cfg)
    mesh = shd.make_mesh(cfg.mesh, jax.devices()[:1])
    shapes = rtm.model_shapes(net, mesh, cfg)
    params, stats = rtm.init_variables(net, mesh, cfg, shapes, jax.random.PRNGKey(0))
    rt = rtm.build_stage(net, mesh, cfg, shapes, stage - 1)
    state = rtm.start_state(rt, params, stats, step=0, key=jax.random.PRNGKey(1))
    src = SyntheticSource(cfg, batch, frames)
    batches = [shd.global_batch(mesh, next(src)) for _ in range(2)]
    t0 = time.perf_counter()
    compiled = rt.train_step.lower(rt.abstract_state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batches[0])  # warm-up
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, batches[i % 2])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    model_flops = flops.train_step(cfg.codec, stage, batch, frames,
                                   prompt_frames=cfg.codec.paralinguistic.prompt_frames)
    row = {"preset": preset, "stage": stage, "dtype": dtype, "batch": batch, "frames": frames,
           "compile_s": round(compile_s, 2), "step_times_s": [round(t, 5) for t in times],
           "median_step_s": med, "frames_per_s": batch * frames / med,
           "audio_s_per_s": batch * frames * cfg.codec.mel.hop_length / cfg.codec.mel.sample_rate / med,
           "model_tflop_per_step": model_flops / 1e12, "achieved_tflops": model_flops / med / 1e12,
           "loss": float(m["loss/total"]), "memory": _memory(compiled)}
    for label, peak in peaks.items():
        if peak:
            row[f"mfu_vs_{label}"] = model_flops / med / peak
    return row


def _random_codec(preset: str, dtype: str):
    import jax

    from secoustic_jax.api import _init_inputs
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.model.codec import SecoustiCodec
    cfg = load_experiment(REPO / PRESETS[preset], {"codec.compute_dtype": dtype}).codec
    codec = SecoustiCodec(cfg)
    import flax.linen as nn
    variables = jax.jit(lambda k: nn.meta.unbox(codec.init(k, *_init_inputs(cfg), train=False)))(
        jax.random.PRNGKey(0))
    return cfg, codec, {k: variables[k] for k in ("params", "batch_stats") if k in variables}


def offline_row(preset: str, dtype: str, batch: int, seconds: float, repeats: int) -> dict:
    """Module-level jit of encode_tokens and decode_tokens on [batch, seconds] of input."""
    import jax
    import jax.numpy as jnp

    from secoustic_jax.model.codec import SecoustiCodec
    cfg, codec, v = _random_codec(preset, dtype)
    frames = cfg.hop * int(round(seconds * cfg.token_rate))
    mel = jax.random.normal(jax.random.PRNGKey(2), (batch, frames, 80)) - 5.0
    enc = jax.jit(lambda v, m: codec.apply(v, m, method=SecoustiCodec.encode_tokens))
    dec = jax.jit(lambda v, t, g: codec.apply(v, t, g, method=SecoustiCodec.decode_tokens))
    tokens = enc(v, mel)
    g = jnp.zeros((batch, cfg.transformer.d_model), jnp.float32)
    jax.block_until_ready(dec(v, tokens, g))
    audio = batch * frames * cfg.mel.hop_length / cfg.mel.sample_rate
    t_enc, _ = _median_time(lambda: enc(v, mel), repeats)
    t_dec, _ = _median_time(lambda: dec(v, tokens, g), repeats)
    return {"preset": preset, "dtype": dtype, "batch": batch, "seconds": seconds,
            "encode_s": t_enc, "decode_s": t_dec, "encode_audio_s_per_s": audio / t_enc,
            "decode_audio_s_per_s": audio / t_dec}


def streaming_row(preset: str, steps: int) -> dict:
    """Batch-1 streaming encode_step + decode_step latency (one token per call), float32."""
    import jax
    import jax.numpy as jnp

    from secoustic_jax.streaming import codec_steps as cs
    cfg, _, v = _random_codec(preset, "float32")
    st = cs.init_state(v, cfg, 1)
    g = jnp.zeros((1, cfg.transformer.d_model), jnp.float32)
    mel = jax.random.normal(jax.random.PRNGKey(3), (1, cfg.hop, 80)) - 5.0
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        st, tok = cs.encode_step(v, st, mel)
        st, out = cs.decode_step(v, st, tok, g)
        jax.block_until_ready(out)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    period = 1000.0 / cfg.token_rate
    return {"preset": preset, "steps": steps, "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "token_period_ms": period,
            "rtf": float(np.median(ms)) / period}


def device_info() -> dict:
    import jax
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(),
            "host": platform.platform()}


def peak_memory() -> int | None:
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["86hz", "21_5hz"], choices=list(PRESETS))
    ap.add_argument("--stages", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                    choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--offline-batch", type=int, default=64)
    ap.add_argument("--offline-seconds", type=float, default=10.0)
    ap.add_argument("--stream-steps", type=int, default=100)
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="rows not started by then are recorded as skipped (8-minute slot)")
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke run: tiny preset, batch 2 x 64 frames, 2 steps")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.quick:
        a.presets, a.batch, a.frames, a.steps = ["tiny"], 2, 64, 2
        a.offline_batch, a.offline_seconds, a.stream_steps, a.matmul_n = 2, 2.0, 5, 256
    return a


def plan(a, info: dict, rates: dict):
    """(section, key, thunk) per row, in order: every train row of a preset, then its
    offline rows, then its streaming row."""
    rows = []
    for preset in a.presets:
        for stage in a.stages:
            for dt in a.dtypes:
                peaks = {"chip_bf16_peak": chip_peak(info["device_kind"]),
                         "measured_matmul": rates[dt]}
                rows.append(("train", {"preset": preset, "stage": stage, "dtype": dt},
                             lambda p=preset, s=stage, d=dt, k=peaks: train_row(
                                 p, s, d, a.batch, a.frames, a.steps, k)))
        for dt in a.dtypes:
            rows.append(("offline", {"preset": preset, "dtype": dt},
                         lambda p=preset, d=dt: offline_row(p, d, a.offline_batch,
                                                            a.offline_seconds, a.steps)))
        rows.append(("streaming", {"preset": preset},
                     lambda p=preset: streaming_row(p, a.stream_steps)))
    return rows


def main(argv=None) -> int:
    a = parse(argv)
    t_start = time.perf_counter()
    info = device_info()
    rates = {dt: matmul_rate(dt, a.matmul_n) for dt in a.dtypes}
    result = {"device": info, "settings": vars(a), "matmul_tflops": {k: v / 1e12 for k, v in rates.items()},
              "chip_bf16_peak_tflops": (chip_peak(info["device_kind"]) or 0) / 1e12 or None,
              "train": [], "offline": [], "streaming": []}
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every row, so a run cut short still leaves its rows
        result["peak_device_bytes"] = peak_memory()
        result["wall_s"] = time.perf_counter() - t_start
        out.write_text(json.dumps(result, indent=1))

    for section, key, run in plan(a, info, rates):
        if time.perf_counter() - t_start > a.budget_s:
            result[section].append({**key, "skipped": f"budget {a.budget_s:.0f} s spent"})
        else:
            row = run()
            result[section].append(row)
            print(section, json.dumps({k: v for k, v in row.items()
                                       if k not in ("step_times_s", "memory")}), flush=True)
        save()
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
