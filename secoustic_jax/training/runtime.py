"""Per-stage runtime: shardings from shapes, jitted init, jitted train/eval steps (lm1b style).

Flow: `jax.eval_shape(net.init)` gives boxed abstract variables -> logical PartitionSpecs ->
mesh shardings; init runs under jit with those `out_shardings`, so parameters are created
already sharded. Each stage gets its own optimiser (fresh state, schedule restarting with
warm-up) and its own compiled step with explicit in/out shardings and the state donated.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.training import sharding as shd
from secoustic_jax.training.optim import lr_schedule, make_optimizer
from secoustic_jax.training.stages import param_labels, stage_spec, stats_labels
from secoustic_jax.training.step import TrainState, make_eval_step, make_train_step


def dummy_batch(config: ExperimentConfig, batch: int, frames: int) -> dict:
    """Zero batch with the pipeline's shapes and dtypes (used for shapes only)."""
    p, pf = config.data.pipeline.max_phones, config.codec.paralinguistic.prompt_frames
    return {"mel": np.zeros((batch, frames, 80), np.float32),
            "mel_mask": np.ones((batch, frames), np.float32),
            "phones": np.ones((batch, p), np.int32), "phone_durations": np.zeros((batch, p), np.int32),
            "frame_phones": np.zeros((batch, frames), np.int32),
            "token_phones": np.zeros((batch, frames // 4), np.int32),
            "prompt_mel": np.zeros((batch, pf, 80), np.float32),
            "prompt_lengths": np.full((batch,), pf, np.int32), "speaker": np.zeros((batch,), np.int32)}


@dataclasses.dataclass
class ModelShapes:
    """Abstract variables and their shardings (same for every stage)."""

    params: Any  # ShapeDtypeStruct tree
    batch_stats: Any
    param_specs: Any
    param_shardings: Any
    stats_shardings: Any


def model_shapes(net, mesh, config: ExperimentConfig) -> ModelShapes:
    batch = dummy_batch(config, 1, 4 * config.codec.hop)
    # The batch is an argument (traced), not a closed-over constant: host-side input checks
    # in the model only run on concrete values.
    boxed = jax.eval_shape(lambda k, b: net.init({"params": k, "sample": k, "dropout": k}, b),
                           jax.random.PRNGKey(0), batch)
    specs = shd.param_specs(boxed["params"], config.mesh, mesh.shape[shd.FSDP])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.meta.unbox(boxed))
    stats = abstract.get("batch_stats", {})
    repl = NamedSharding(mesh, P())
    return ModelShapes(abstract["params"], stats, specs, shd.to_shardings(mesh, specs),
                       jax.tree.map(lambda _: repl, stats))


def init_variables(net, mesh, config: ExperimentConfig, shapes: ModelShapes, key):
    """Jitted init with out_shardings: (params, batch_stats) created sharded."""
    batch = dummy_batch(config, 1, 4 * config.codec.hop)

    def init(k, b):
        v = nn.meta.unbox(net.init({"params": k, "sample": k, "dropout": k}, b))
        # Strong dtypes: a weak-typed leaf (e.g. a statistic from jnp.full with a Python
        # float) would come back strong from the first step and force a recompile.
        v = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), v)
        return v["params"], v.get("batch_stats", {})

    return jax.jit(init, out_shardings=(shapes.param_shardings, shapes.stats_shardings))(key, batch)


@dataclasses.dataclass
class StageRuntime:
    index: int
    tx: Any
    schedule: Callable
    state_shardings: TrainState
    abstract_state: TrainState  # ShapeDtypeStructs carrying shardings (restore template)
    train_step: Callable  # jitted (state, batch) -> (state, metrics); donates state
    eval_step: Callable  # jitted (params, stats, batch, key, stage_step) -> metrics
    new_opt_state: Callable  # jitted params -> opt_state


def _under_rules(mesh, fn):
    """`fn` traced under the mesh and the logical axis rules (activation constraints)."""
    @functools.wraps(fn)
    def wrapped(*args):
        with shd.activation_rules(mesh):
            return fn(*args)
    return wrapped


def build_stage(net, mesh, config: ExperimentConfig, shapes: ModelShapes, index: int) -> StageRuntime:
    spec = stage_spec(index)
    tx = make_optimizer(config, index, shapes.params)
    labels = param_labels(shapes.params, spec)
    slabels = stats_labels(shapes.batch_stats, spec)
    abstract_opt = jax.eval_shape(tx.init, shapes.params)
    flat = shd.flat_param_specs(shapes.params, shapes.param_specs)
    opt_sh = shd.to_shardings(mesh, shd.tree_specs_like(abstract_opt, flat))
    repl = NamedSharding(mesh, P())
    state_sh = TrainState(step=repl, stage_step=repl, params=shapes.param_shardings,
                          batch_stats=shapes.stats_shardings, opt_state=opt_sh, rng=repl,
                          nan_skipped=repl, nan_consecutive=repl)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    abstract = TrainState(step=scalar, stage_step=scalar, params=shapes.params,
                          batch_stats=shapes.batch_stats, opt_state=abstract_opt,
                          rng=jax.ShapeDtypeStruct((2,), jnp.uint32), nan_skipped=scalar,
                          nan_consecutive=scalar)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, state_sh)
    schedule = lr_schedule(config, index)
    step_fn = _under_rules(mesh, make_train_step(net, tx, labels, slabels, stage_index=index,
                                                 grad_accum=config.optim.grad_accum,
                                                 schedule=schedule))
    bsh = shd.batch_sharding(mesh)
    train_step = jax.jit(step_fn, in_shardings=(state_sh, bsh), out_shardings=(state_sh, repl),
                         donate_argnums=(0,))
    eval_step = jax.jit(_under_rules(mesh, make_eval_step(net, stage_index=index)),
                        in_shardings=(shapes.param_shardings, shapes.stats_shardings, bsh, repl, repl),
                        out_shardings=repl)
    new_opt = jax.jit(tx.init, in_shardings=(shapes.param_shardings,), out_shardings=opt_sh)
    return StageRuntime(index, tx, schedule, state_sh, abstract, train_step, eval_step, new_opt)


def start_state(rt: StageRuntime, params, batch_stats, *, step: int, key) -> TrainState:
    """A stage's first state: given params/stats, fresh optimiser state, stage_step 0."""
    put = lambda x, s: jax.device_put(x, s)  # noqa: E731
    repl = rt.state_shardings.step
    zero = lambda: put(np.zeros((), np.int32), repl)  # noqa: E731 (distinct buffers: donated)
    return TrainState(step=put(np.asarray(step, np.int32), repl), stage_step=zero(),
                      params=params, batch_stats=batch_stats, opt_state=rt.new_opt_state(params),
                      rng=put(np.asarray(key, np.uint32), repl), nan_skipped=zero(),
                      nan_consecutive=zero())
