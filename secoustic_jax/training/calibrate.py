"""Measured wall cost of each stage's train step, input pipeline included (the demo planner).

`measure_step_costs(config, steps=12)` builds every enabled stage exactly as `train` does
(same runtime, same data source), runs one compiling step and WARMUP_STEPS more, then
times a window of `steps` steps of `next(source)` + the jitted update with one sync at its
end, as the training loop runs them (it reads metrics back only at log points, so the
host prepares the next batch while the device runs the step), and returns the window's
wall seconds per step. Synchronising after every step, as this did before, timed stage 1
of the demo at 0.116 s per step where training ran it at 0.079. With `min_seconds`, such
windows repeat until the stage has been timed that long: on a VM whose speed wanders, one
12-step window of the tiny finetune step read 0.73-1.02 s within minutes of itself (the
2026-12-07 `make demo` planned from a 0.733 s window and trained at 0.835 s; docs/demo.md,
"Sizing"). The parameters it trains are thrown away. With a persistent compilation cache
(the demo sets one), the training run that follows re-uses these compiles.
"""

from __future__ import annotations

import functools
import time

import jax

from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.training import sharding as shd
from secoustic_jax.training.adversary import label_guard
from secoustic_jax.training.data import make_source
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import CodecFactory, TrainNet
from secoustic_jax.training.prefetch import DevicePrefetch
from secoustic_jax.training.runtime import build_stage, init_variables, model_shapes, start_state


WARMUP_STEPS = 3  # untimed after the compile: the input pipeline's prefetch fills up


def measure_step_costs(config: ExperimentConfig, steps: int = 12,
                       codec_factory: CodecFactory | None = None,
                       min_seconds: float = 0.0) -> dict:
    """-> {"step_s": {stage name: s/step over its timed windows}, "compile_s": {stage
    name: s}, "steps_timed": {stage name: steps}}. Each stage runs windows of `steps` steps
    (one sync at each window's end) until it has been timed for `min_seconds` (at least one
    window). Single process (the demo's machine)."""
    if steps < 1:
        raise ValueError("measure_step_costs: steps must be >= 1")
    if min_seconds < 0:
        raise ValueError(f"measure_step_costs: min_seconds must be >= 0, got {min_seconds}")
    config, _ = resolve_config(config)
    net = TrainNet(config, codec_factory)
    mesh = shd.make_mesh(config.mesh)
    shapes = model_shapes(net, mesh, config)
    params, stats = init_variables(net, mesh, config, shapes, jax.random.PRNGKey(config.seed))
    out = {"step_s": {}, "compile_s": {}, "steps_timed": {}}
    for idx in config.enabled_stages:
        name = config.stages[idx].name
        rt = build_stage(net, mesh, config, shapes, idx)
        # A copy: the step donates its state, and the next stage starts from `params`.
        p = jax.tree.map(lambda x: x.copy(), params)
        s = jax.tree.map(lambda x: x.copy(), stats)
        state = start_state(rt, p, s, step=0, key=jax.random.PRNGKey(0))
        src = make_source(config, idx, split="train", process_index=0, process_count=1)
        put = label_guard(functools.partial(shd.global_batch, mesh, mel=config.codec.mel),
                          config.loss)
        feed = DevicePrefetch(src, put, config.execution.device_prefetch)
        try:
            t0 = time.perf_counter()
            state, m = rt.train_step(state, next(feed))
            jax.block_until_ready(m)
            out["compile_s"][name] = time.perf_counter() - t0
            for _ in range(WARMUP_STEPS):
                state, m = rt.train_step(state, next(feed))
            jax.block_until_ready(m)
            timed, n = 0.0, 0
            while n == 0 or timed < min_seconds:
                t0 = time.perf_counter()
                for _ in range(steps):
                    state, m = rt.train_step(state, next(feed))
                jax.block_until_ready((state, m))
                timed += time.perf_counter() - t0
                n += steps
            out["step_s"][name], out["steps_timed"][name] = timed / n, n
        finally:
            if hasattr(src, "close"):
                src.close()
    return out
