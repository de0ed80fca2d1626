"""Compile-only memory of paper-scale train steps: layer loop and remat, and a sharded mesh.

    python bench/bench_memory.py --layers [--preset 86hz] [--out bench/results/memory_layers.json]
    python bench/bench_memory.py --mesh [--devices 8] [--out bench/results/memory_mesh.json]

Nothing is executed: each train step is lowered on abstract state and batch (ShapeDtypeStructs
with their shardings) and compiled, and `compiled.memory_analysis()` gives the per-device
argument, output, temporary and aliased bytes. peak = arguments + outputs + temporaries -
aliased (the donated state is aliased to the new one).

- `--layers`: the 86 Hz stage-1 step at the paper batch (32 x 256) on one CPU device, with
  the transformer layers unrolled or scanned, and each remat policy: compile seconds and
  peak bytes.
- `--mesh`: both presets' stage-1 and stage-2 steps at the paper batch on a simulated mesh of
  `--devices` CPU devices (`--xla_force_host_platform_device_count`, set before JAX starts),
  for several data x fsdp splits, scanned layers with full remat (the accelerator default
  of `execution`): per-device peak bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {"86hz": "configs/86hz.py", "21_5hz": "configs/21_5hz.py", "tiny": "configs/tiny.py"}
LOOPS = [("off", "none"), ("on", "none"), ("on", "full"), ("on", "dots")]


def compile_step(preset: str, stage: int, batch: int, frames: int, scan: str, remat: str,
                 data: int = 1, fsdp: int = 1) -> dict:
    """Lowers and compiles one train step on abstract inputs -> timings and memory (bytes)."""
    import jax

    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training import runtime as rtm, sharding as shd
    from secoustic_jax.training.loop import resolve_config
    from secoustic_jax.training.model import TrainNet

    name = ("acoustic", "semantic")[stage - 1]
    cfg = load_experiment(REPO / PRESETS[preset], {
        "data.kind": "synthetic", f"stages.{name}.batch_size": batch,
        f"stages.{name}.segment_frames": frames, "data.pipeline.max_phones": 64,
        "execution.scan_layers": scan, "execution.remat": remat,
        "mesh.data": data, "mesh.fsdp": fsdp})
    cfg, _ = resolve_config(cfg)
    net = TrainNet(cfg)
    mesh = shd.make_mesh(cfg.mesh, jax.devices()[: data * fsdp])
    shapes = rtm.model_shapes(net, mesh, cfg)
    rt = rtm.build_stage(net, mesh, cfg, shapes, stage - 1)
    bsh = shd.batch_sharding(mesh)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh)
                      for k, v in rtm.dummy_batch(cfg, batch, frames).items()}
    t0 = time.perf_counter()
    lowered = rt.train_step.lower(rt.abstract_state, abstract_batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    m = compiled.memory_analysis()
    mem = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                            "temp_size_in_bytes", "alias_size_in_bytes")}
    peak = (mem["argument_size_in_bytes"] + mem["output_size_in_bytes"]
            + mem["temp_size_in_bytes"] - mem["alias_size_in_bytes"])
    return {"preset": preset, "stage": stage, "batch": batch, "frames": frames,
            "scan_layers": scan, "remat": remat, "data": data, "fsdp": fsdp,
            "lower_s": round(t1 - t0, 2), "compile_s": round(t2 - t1, 2), **mem,
            "peak_bytes": peak, "peak_gib": round(peak / 2 ** 30, 3)}


def layers_table(preset: str, batch: int, frames: int) -> list[dict]:
    rows = []
    for scan, remat in LOOPS:
        r = compile_step(preset, 1, batch, frames, scan, remat)
        rows.append(r)
        print(f"{preset} stage 1 scan={scan:3s} remat={remat:4s} compile {r['compile_s']:6.1f} s  "
              f"peak {r['peak_gib']:.2f} GiB (temp {r['temp_size_in_bytes'] / 2 ** 30:.2f})",
              flush=True)
    return rows


def mesh_table(presets, devices: int, splits, stages, batch: int, frames: int) -> list[dict]:
    rows = []
    for preset in presets:
        for stage in stages:
            for data, fsdp in splits:
                r = compile_step(preset, stage, batch, frames, "on", "full", data, fsdp)
                rows.append(r)
                print(f"{preset} stage {stage} data={data} fsdp={fsdp}: peak {r['peak_gib']:.2f} "
                      f"GiB per device (compile {r['compile_s']:.0f} s)", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--mesh", action="store_true")
    ap.add_argument("--preset", default="86hz")
    ap.add_argument("--presets", nargs="+", default=["86hz", "21_5hz"])
    ap.add_argument("--stages", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--splits", nargs="+", default=["8x1", "4x2", "2x4", "1x8"],
                    help="data x fsdp")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.mesh and "_SECOUSTIC_MEM_CHILD" not in os.environ:
        # The device count must be set before JAX initialises: rerun in a child process.
        env = dict(os.environ, _SECOUSTIC_MEM_CHILD="1", JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={a.devices}")
        return subprocess.call([sys.executable, __file__, *(argv or sys.argv[1:])], env=env)
    result = {"settings": vars(a)}
    if a.layers:
        result["layers"] = layers_table(a.preset, a.batch, a.frames)
    if a.mesh:
        splits = [tuple(int(x) for x in s.split("x")) for s in a.splits]
        result["mesh"] = mesh_table(a.presets, a.devices, splits, a.stages, a.batch, a.frames)
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
