"""The linear trainer (big_vision style): set up, resume, run every enabled stage, log, save.

Sections: distributed start-up -> phone inventory (fixes the phoneme vocabulary) -> mesh and
shapes -> resume point from the latest complete checkpoint -> per stage: compiled runtime,
fresh or restored state, the step loop (logging, validation, checkpoints, NaN guard,
SIGTERM) -> final checkpoint of the stage. Stage boundaries are part of the run state: a
checkpoint records the stage index, its stage step and whether the stage was finished.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import signal
import sys
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.data import device_mel
from secoustic_jax.data.packed_format import load_index
from secoustic_jax.data.phones import PhoneInventory
from secoustic_jax.training import data_init, distributed, resume as resuming, sharding as shd
from secoustic_jax.training.adversary import label_guard
from secoustic_jax.training.checkpoint import Checkpointer, load_codec_variables, make_meta
from secoustic_jax.training.data import make_source
from secoustic_jax.training.logging import Logger, MetricWindow
from secoustic_jax.training.model import CodecFactory, TrainNet
from secoustic_jax.training.prefetch import DevicePrefetch
from secoustic_jax.training.runtime import (build_stage, init_variables, model_shapes,
                                            start_state)
from secoustic_jax.training.stages import stage_spec, stage_start_steps
from secoustic_jax.training.validation import log_media, run_validation


class PersistentNaNError(RuntimeError):
    """Too many consecutive non-finite steps: the run stops instead of spinning."""


@dataclasses.dataclass
class Run:
    config: ExperimentConfig
    workdir: pathlib.Path
    net: nn.Module
    mesh: object
    shapes: object
    ckpt: Checkpointer
    logger: Logger
    inventory: list[str]
    stop_flag: threading.Event
    last_saved: int = -1


def data_inventory(config: ExperimentConfig) -> list[str]:
    """Phone labels of the data (ID = position); their number fixes the embedding size."""
    if config.data.kind == "synthetic":
        src = make_source(config, config.enabled_stages[0], split="train", process_index=0,
                          process_count=1, batch=1)
        return list(src.inventory_labels)
    if config.data.kind == "packed":  # the inventory the records were packed with
        return list(load_index(config.data.packed)["phones"])
    root = pathlib.Path(config.data.root)
    if not root.is_dir():
        raise ConfigError(f"data.root={config.data.root}: no corpus there. Build one with "
                          f"`secoustic corpus build --out {config.data.root}`, point "
                          "--set data.root=... at yours, or train on generated data with "
                          "--set data.kind=synthetic")
    return list(PhoneInventory.load(root).labels)


def resolve_config(config: ExperimentConfig) -> tuple[ExperimentConfig, list[str]]:
    """Fills phonemes.vocab_size from the inventory (or checks it when set)."""
    inv = data_inventory(config)
    if config.phonemes.vocab_size == 0:
        config = dataclasses.replace(config, phonemes=dataclasses.replace(
            config.phonemes, vocab_size=len(inv)))
    elif config.phonemes.vocab_size != len(inv):
        raise ConfigError(f"phonemes.vocab_size={config.phonemes.vocab_size} but the phone "
                         f"inventory has {len(inv)} entries")
    return config, inv


def _install_stop_handlers(flag: threading.Event) -> dict:
    """SIGTERM and SIGINT (Ctrl-C) set `flag`: the loop saves at the next step boundary and
    returns. A second Ctrl-C while that is pending interrupts at once (KeyboardInterrupt).
    -> the previous handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum, _frame):
        if signum == signal.SIGINT and flag.is_set():
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\ninterrupted: saving a checkpoint at the end of this step (Ctrl-C again "
                  "to quit without it)", file=sys.stderr, flush=True)
        flag.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def train(config: ExperimentConfig, workdir, *, progress: bool = True,
          codec_factory: CodecFactory | None = None) -> dict:
    """Runs every enabled stage (resuming from the latest complete checkpoint) -> summary.

    codec_factory(codec_cfg) -> nn.Module trains a modified codec (SecoustiCodec's methods
    and parameter tree); None trains SecoustiCodec with the layer loop of config.execution.
    """
    distributed.initialize(config.distributed)
    t_start = time.time()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config, inventory = resolve_config(config)
    net = TrainNet(config, codec_factory)
    mesh = shd.make_mesh(config.mesh)
    shapes = model_shapes(net, mesh, config)
    ckpt = Checkpointer(workdir, config.checkpoint)
    had_checkpoints = bool(ckpt.all_steps())
    resume = resuming.find_resume(
        ckpt, workdir, config, inventory,
        lambda idx: build_stage(net, mesh, config, shapes, idx).abstract_state)
    if jax.process_index() == 0 and had_checkpoints:
        print(resuming.describe(resume), file=sys.stderr, flush=True)
    total = sum(config.stages[i].steps for i in config.enabled_stages)
    logger = Logger(workdir, enabled=jax.process_index() == 0, progress=progress,
                    total_steps=total, initial=resume["step"] if resume else 0)
    run = Run(config, workdir, net, mesh, shapes, ckpt, logger, inventory, threading.Event())
    old_handlers = _install_stop_handlers(run.stop_flag)
    summary = {"stages": {}, "preempted": False, "resumed_from": resume and resume["step"]}
    try:
        params = stats = None
        for idx in config.enabled_stages:
            if resume and idx < resume["stage_index"]:
                continue
            rt = build_stage(net, mesh, config, shapes, idx)
            state, src, fresh = _stage_state(run, rt, idx, resume, params, stats)
            resume = None
            if state is None:  # resumed from the checkpoint that finished this stage
                params, stats = fresh
                continue
            try:
                result = _run_stage(run, rt, idx, state, src)
            finally:
                if hasattr(src, "close"):  # grain iterators hold threads / shared memory
                    src.close()
            summary["stages"][config.stages[idx].name] = result["summary"]
            if result["stop"]:
                summary[result["stop"]] = True
                break
            params, stats = result["state"].params, result["state"].batch_stats
    finally:
        ckpt.close()
        logger.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    summary.update(wall_time_s=time.time() - t_start, last_checkpoint=ckpt.latest_step(),
                   workdir=str(workdir))
    return summary


def _stage_state(run: Run, rt, idx: int, resume, params, stats):
    """-> (state | None, source, (params, stats) when the stage was already finished)."""
    config = run.config
    src = make_source(config, idx, split="train", process_index=jax.process_index(),
                      process_count=jax.process_count())
    if resume and resume["stage_index"] == idx:
        state, data_state = resume["state"], resume["data_state"]  # verified on restore
        if resume["stage_done"]:
            return None, src, (state.params, state.batch_stats)
        src.set_state(data_state)
        return state, src, None
    if params is None:
        params, stats = init_variables(run.net, run.mesh, config, run.shapes,
                                       jax.random.PRNGKey(config.seed))
        if config.init.codec_from:
            params, stats = _warm_start(run, params, stats)
            # The copied codec keeps its own first/last convs; the log-variance bias (the
            # stage-2 heads, which stage 1 never trains) still applies when set.
            params = data_init.data_dependent_init(
                params, dataclasses.replace(config, init=dataclasses.replace(
                    config.init, mel_stats=False, seanet_pca=False)), [], param_shardings=run.shapes.param_shardings)
        else:
            params = _data_init(run, idx, params)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), idx)
    step = stage_start_steps(config)[idx]
    return start_state(rt, params, stats, step=step, key=key), src, None


def _warm_start(run: Run, params, stats):
    """params/stats with the codec subtree replaced by that of `config.init.codec_from`."""

    codec_cfg, variables = load_codec_variables(run.config.init.codec_from)
    if codec_cfg != run.config.codec:
        raise ConfigError(f"init.codec_from={run.config.init.codec_from}: its codec config "
                         "differs from this run's")

    def put(new, old, sharding):
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ValueError(f"init.codec_from: array {new.shape} {new.dtype} does not match "
                             f"{old.shape} {old.dtype}")
        return jax.device_put(new, sharding)

    sh = run.shapes
    params = dict(params, codec=jax.tree.map(put, variables["params"], params["codec"],
                                             sh.param_shardings["codec"]))
    if stats:
        stats = dict(stats, codec=jax.tree.map(put, variables["batch_stats"], stats["codec"],
                                               sh.stats_shardings["codec"]))
    return params, stats


def _data_init(run: Run, idx: int, params):
    """config.init on fresh parameters; statistics from a separate pass over the training
    split (its own iterator, so the stage's data order is that of a run without it)."""
    config = run.config
    if not (config.init.mel_stats or config.init.seanet_pca):
        return data_init.data_dependent_init(params, config, [],
                                             param_shardings=run.shapes.param_shardings)
    src = make_source(config, idx, split="train", process_index=jax.process_index(),
                      process_count=jax.process_count())
    try:
        return data_init.data_dependent_init(params, config,
                                             device_mel.host_mel_batches(src, config.codec.mel),
                                             param_shardings=run.shapes.param_shardings,
                                             process_count=jax.process_count())
    finally:
        if hasattr(src, "close"):
            src.close()


def _save(run: Run, state, src, idx: int, *, done: bool, wait: bool = False) -> None:
    if int(state.step) == run.last_saved:  # e.g. SIGTERM right after a periodic save
        if wait:
            run.ckpt.wait()
        return
    if not bool(_all_finite(state.params)):
        raise PersistentNaNError("refusing to checkpoint non-finite parameters")
    meta = make_meta(run.config, stage_index=idx, stage_step=int(state.stage_step),
                     step=int(state.step), inventory=run.inventory, stage_done=done,
                     state_checksum=resuming.state_checksum(state))
    run.ckpt.save(int(state.step), state, src.get_state(), meta)
    run.last_saved = int(state.step)
    if wait:
        run.ckpt.wait()


@jax.jit
def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _run_stage(run: Run, rt, idx: int, state, src) -> dict:
    """The step loop of one stage. -> {"state", "summary", "stop": "" | reason}.

    Step metrics stay on the device until a log, checkpoint or stop point (`_drain`), so the
    host never waits for a step it has just dispatched: the next batches are prepared and
    placed on the devices (`execution.device_prefetch` ahead) while the device computes. The non-finite check is then run over the drained steps in order,
    so it raises at the same step, with the same count, as a per-step check would."""
    config, logger = run.config, run.logger
    stage, lc = config.stages[idx], config.log
    window, t_stage = MetricWindow(), time.time()
    step, stage_step = int(state.step), int(state.stage_step)
    first = step
    nan_run, last, stop, pending = int(state.nan_consecutive), {}, "", []
    t_window, steady = time.perf_counter(), None
    # The source is closed by the caller; the feed only adds the device-side queue.
    put = label_guard(functools.partial(shd.global_batch, run.mesh, mel=run.config.codec.mel),
                      config.loss)
    feed = DevicePrefetch(src, put, config.execution.device_prefetch)
    while stage_step < stage.steps:
        batch = next(feed)
        state, metrics = rt.train_step(state, batch)
        pending.append(metrics)
        step, stage_step = step + 1, stage_step + 1
        log_now = step % lc.every_steps == 0 or stage_step == stage.steps
        eval_now = bool(lc.eval_every_steps) and step % lc.eval_every_steps == 0 and stage_step < stage.steps
        save_now = step % config.checkpoint.every_steps == 0 and stage_step < stage.steps
        stop_now = distributed.any_host(run.stop_flag.is_set())
        if log_now or eval_now or save_now or stop_now:
            nan_run = _drain(run, idx, pending, window, nan_run, step, t_window)
            steady = steady or (time.time(), step)  # past the compile and the first batches
            if log_now:
                last = window.summary()
                logger.scalars(step, last)
                logger.progress(window.n, {"loss": last["loss/total"]})
                window.reset()
            if eval_now:
                _validate(run, rt, idx, state, step, media=True)
            if save_now:
                _save(run, state, feed, idx, done=False)
            if stop_now:
                _save(run, state, feed, idx, done=False, wait=True)
                stop = "preempted"
                break
            t_window = time.perf_counter()
    summary = _stage_summary(last, step, step - first, t_stage, steady)
    if not stop:
        _save(run, state, feed, idx, done=True, wait=True)
        summary["valid"] = _validate(run, rt, idx, state, step, media=True)
    return {"state": state, "summary": summary, "stop": stop}


def _drain(run: Run, idx: int, pending: list, window: MetricWindow, nan_run: int, step: int,
           t_window: float) -> int:
    """Reads back the metrics of the steps since the last drain (one host sync), checks them
    for persistent non-finite steps in order and adds them to the window; empties
    `pending`. Step time is the wall time since the last drain over its steps: with
    asynchronous dispatch, no single step's time is observable without a sync.
    -> the consecutive-skip count after the last drained step."""
    if not pending:
        return nan_run
    stage = run.config.stages[idx]
    fetched = jax.device_get(pending)
    dt = (time.perf_counter() - t_window) / len(fetched)
    first = step - len(fetched) + 1
    for i, metrics in enumerate(fetched):
        nan_run = nan_run + 1 if metrics["skipped"] else 0
        if nan_run >= run.config.nan_max_consecutive:
            raise PersistentNaNError(
                f"{nan_run} consecutive steps with a non-finite loss or gradient (stage "
                f"{stage.name}, step {first + i}); the last checkpoint holds finite parameters. "
                "Lower the learning rate or inspect the data around this step.")
        window.add(dict(metrics, step_time_s=dt, examples_per_s=stage.batch_size / dt,
                        frames_per_s=stage.batch_size * stage.segment_frames / dt,
                        stage=float(idx)))
    pending.clear()
    return nan_run


def _stage_summary(last: dict, step: int, steps_run: int, t0: float,
                   steady: tuple[float, int] | None) -> dict:
    """steps_run and wall_time_s cover this call only (a resumed stage ran part of it).
    steady_steps / steady_wall_s start at the first drained window (time, step): they leave
    out the step's compile and the pipeline's warm-up, which a rate for planning the steps
    of a later stage must not count once per step."""
    now = time.time()
    t_steady, s_steady = steady or (now, step)
    return {"final_step": step, "steps_run": steps_run, "wall_time_s": now - t0,
            "steady_steps": step - s_steady, "steady_wall_s": now - t_steady,
            "last_window": last}


def _validate(run: Run, rt, idx: int, state, step: int, *, media: bool) -> dict:
    config = run.config
    src = make_source(config, idx, split=config.data.valid_split,
                      process_index=jax.process_index(), process_count=jax.process_count())
    key = jax.random.PRNGKey(config.seed + 7)
    metrics, first = run_validation(rt, state, src, run.mesh, config.log.eval_batches, key,
                                    config.codec.mel)
    if hasattr(src, "close"):
        src.close()
    run.logger.scalars(step, metrics, prefix="valid")
    if media and first is not None and jax.process_count() == 1:
        log_media(run.logger, step, run.net, state, first, stage_spec(idx).forward,
                  examples=config.log.audio_examples, gl_iters=config.log.griffin_lim_iters)
    return metrics
