"""Measured wall cost of each stage's train step, input pipeline included (the demo planner).

`measure_step_costs(config, steps=12)` builds every enabled stage exactly as `train` does
(same runtime, same data source), runs one compiling step and WARMUP_STEPS more, then
times a window of `steps` steps of `next(source)` + the jitted update with one sync at its
end, as the training loop runs them (it reads metrics back only at log points, so the
host prepares the next batch while the device runs the step), and returns the window's
wall seconds per step. Synchronising after every step, as this did before, timed stage 1
of the demo at 0.116 s per step where training ran it at 0.079. The parameters it trains
are thrown away. With a persistent compilation cache (the demo sets
one), the training run that follows re-uses these compiles.
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
                       codec_factory: CodecFactory | None = None) -> dict:
    """-> {"step_s": {stage name: s/step over the window}, "compile_s": {stage name: s},
    "steps_timed": steps}. Single process (the demo's machine)."""
    if steps < 1:
        raise ValueError("measure_step_costs: steps must be >= 1")
    config, _ = resolve_config(config)
    net = TrainNet(config, codec_factory)
    mesh = shd.make_mesh(config.mesh)
    shapes = model_shapes(net, mesh, config)
    params, stats = init_variables(net, mesh, config, shapes, jax.random.PRNGKey(config.seed))
    out = {"step_s": {}, "compile_s": {}, "steps_timed": steps}
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
            t0 = time.perf_counter()
            for _ in range(steps):
                state, m = rt.train_step(state, next(feed))
            jax.block_until_ready((state, m))
            out["step_s"][name] = (time.perf_counter() - t0) / steps
        finally:
            if hasattr(src, "close"):
                src.close()
    return out
