"""Train-step throughput per preset and stage: median step time after warm-up, frames/s,
peak RSS. Each (preset, stage) runs in its own subprocess so peak RSS is its own.

    python bench/bench_train.py [--presets tiny 21_5hz 86hz] [--repeats 5] \
        [--batch 4] [--seconds 3] [--out bench/results/train.json]

Batches come from the synthetic source (same shapes and dtypes as the corpus pipeline), one
CPU device, float32, the real SecoustiCodec. compile_s is the first (compiling) step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {"tiny": "configs/tiny.py", "21_5hz": "configs/21_5hz.py", "86hz": "configs/86hz.py"}


def one(preset: str, stage: int, batch: int, seconds: float, repeats: int) -> dict:
    """Times `repeats` steps of one stage after a compiling warm-up step (in-process)."""
    import jax

    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training import runtime as rtm, sharding as shd
    from secoustic_jax.training.data import SyntheticSource
    from secoustic_jax.training.loop import resolve_config
    from secoustic_jax.training.model import TrainNet

    frames = int(round(seconds * 22050 / 256 / 4)) * 4  # multiple of 4 (both variants)
    name = ("acoustic", "semantic")[stage]
    cfg = load_experiment(REPO / PRESETS[preset], {
        "data.kind": "synthetic", f"stages.{name}.batch_size": batch,
        f"stages.{name}.segment_frames": frames, "data.pipeline.max_phones": 64})
    cfg, _ = resolve_config(cfg)
    net = TrainNet(cfg)
    mesh = shd.make_mesh(cfg.mesh, jax.devices()[:1])
    shapes = rtm.model_shapes(net, mesh, cfg)
    params, stats = rtm.init_variables(net, mesh, cfg, shapes, jax.random.PRNGKey(0))
    rt = rtm.build_stage(net, mesh, cfg, shapes, stage)
    state = rtm.start_state(rt, params, stats, step=0, key=jax.random.PRNGKey(1))
    src = SyntheticSource(cfg, batch, frames)
    batches = [shd.global_batch(mesh, next(src)) for _ in range(2)]
    t0 = time.perf_counter()
    state, m = rt.train_step(state, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state, m = rt.train_step(state, batches[i % 2])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n_params = sum(int(x.size) for x in jax.tree.leaves(params))
    return {"preset": preset, "stage": name, "batch": batch, "frames": frames,
            "params": n_params, "compile_and_first_step_s": compile_s, "step_times_s": times,
            "median_step_s": med, "frames_per_s": batch * frames / med,
            "loss": float(m["loss/total"]),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__,
            "loadavg_start": os.getloadavg()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--stages", nargs="+", type=int, default=[0, 1])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", default=str(REPO / "bench/results/train.json"))
    p.add_argument("--one", nargs=2, metavar=("PRESET", "STAGE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT" + json.dumps(one(a.one[0], int(a.one[1]), a.batch, a.seconds, a.repeats)))
        return 0
    results = {"machine": machine(), "runs": []}
    for preset in a.presets:
        for stage in a.stages:
            cmd = [sys.executable, __file__, "--one", preset, str(stage), "--batch", str(a.batch),
                   "--seconds", str(a.seconds), "--repeats", str(a.repeats)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                               env=dict(os.environ, JAX_PLATFORMS="cpu"))
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                return r.returncode
            res = json.loads([x for x in r.stdout.splitlines() if x.startswith("RESULT")][-1][6:])
            results["runs"].append(res)
            print(f"{preset:7s} {res['stage']:9s} median {res['median_step_s']:.3f} s  "
                  f"{res['frames_per_s']:.0f} frames/s  peak {res['peak_rss_gib']:.2f} GiB  "
                  f"(compile+first {res['compile_and_first_step_s']:.0f} s)", flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
