"""The pure train and eval steps (big_vision style `update_fn`), and the train state.

One call = one optimiser update over `grad_accum` micro-batches (lax.scan). Gradients are
taken w.r.t. the stage's trainable leaves only; frozen leaves are closed over under
stop_gradient, so the backward pass never enters the frozen modules (their forward is all
they cost). A non-finite loss or gradient norm skips the update (state unchanged except the
step counters and the NaN counters), so a NaN can never reach parameters or checkpoints.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from secoustic_jax.losses import kl_ramp
from secoustic_jax.training.objective import kl_step, split_rngs, stage_objective
from secoustic_jax.training.stages import TRAIN
from secoustic_jax.tree import flatten, unflatten


@flax.struct.dataclass
class TrainState:
    """All arrays of a run. step: global step; stage_step: steps done in the current stage."""

    step: jax.Array
    stage_step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32[2] key
    nan_skipped: jax.Array  # total skipped steps
    nan_consecutive: jax.Array  # skipped steps in a row (reset by a good step)


def _split_batch(batch, accum: int):
    """[B, ...] leaves -> [accum, B/accum, ...]."""
    return jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)


def _merge(train_flat, frozen_flat):
    both = dict(frozen_flat)
    both.update(train_flat)
    return unflatten(both, "/")


def make_train_step(net, tx: optax.GradientTransformation, labels, stats_labels, *,
                    stage_index: int, grad_accum: int = 1, schedule=None):
    """Returns train_step(state, batch) -> (state, metrics). Pure; jit it with shardings.

    labels / stats_labels: "train"/"frozen" trees over params / batch_stats (stages.py).
    """
    config = net.config
    lab, slab = flatten(labels, "/"), flatten(stats_labels, "/")

    def loss_fn(train_flat, frozen_flat, stats, mb, key, kl_w):
        params = _merge(train_flat, jax.lax.stop_gradient(frozen_flat))
        variables = {"params": params, "batch_stats": stats} if stats else {"params": params}
        return stage_objective(net, variables, mb, split_rngs(key), stage_index=stage_index,
                               kl_w=kl_w, train=True)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch):
        pflat = flatten(state.params, "/")
        train_flat = {k: v for k, v in pflat.items() if lab[k] == TRAIN}
        frozen_flat = {k: v for k, v in pflat.items() if lab[k] != TRAIN}
        rng, step_key = jax.random.split(state.rng)
        kl_w = kl_ramp(kl_step(config, state.step, state.stage_step), config.loss)
        micro = _split_batch(batch, grad_accum)

        def body(carry, xs):
            g_acc, stats = carry
            mb, i = xs
            (loss, (metrics, new_stats)), g = grad_fn(train_flat, frozen_flat, stats, mb,
                                                      jax.random.fold_in(step_key, i), kl_w)
            g_acc = jax.tree.map(lambda a, b: a + b / grad_accum, g_acc, g)
            return (g_acc, new_stats), metrics

        zeros = jax.tree.map(jnp.zeros_like, train_flat)
        (grads, new_stats), metrics = jax.lax.scan(
            body, (zeros, state.batch_stats), (micro, jnp.arange(grad_accum)))
        metrics = jax.tree.map(lambda m: jnp.sum(m, 0) if m.ndim > 1 else jnp.mean(m, 0), metrics)
        full_grads = unflatten({**{k: jnp.zeros_like(v) for k, v in frozen_flat.items()},
                                **grads}, "/")
        updates, new_opt = tx.update(full_grads, state.opt_state, state.params)
        new_params = _merge({k: train_flat[k] + updates_k for k, updates_k in
                             ((k, flatten(updates, "/")[k]) for k in train_flat)}, frozen_flat)
        # BatchNorm statistics follow the freezing of their module.
        old_s, new_s = flatten(state.batch_stats, "/"), flatten(new_stats, "/")
        new_stats = unflatten({k: (new_s[k] if slab[k] == TRAIN else v)
                               for k, v in old_s.items()}, "/") if old_s else state.batch_stats
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(metrics["loss/total"]) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1, stage_step=state.stage_step + 1,
            params=keep(new_params, state.params), batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(new_opt, state.opt_state), rng=rng,
            nan_skipped=state.nan_skipped + (~ok).astype(jnp.int32),
            nan_consecutive=jnp.where(ok, 0, state.nan_consecutive + 1))
        metrics.update({"grad_norm": grad_norm, "param_norm": optax.tree.norm(new_state.params),
                        "update_norm": optax.tree.norm(updates), "skipped": (~ok).astype(jnp.float32),
                        "learning_rate": _current_lr(new_state.opt_state, schedule)})
        return new_state, metrics

    return train_step


def _current_lr(opt_state, schedule):
    """schedule(count) with the optimiser's own update count (skipped steps do not count)."""
    if schedule is None:
        return jnp.zeros((), jnp.float32)
    counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    if not counts:
        return jnp.zeros((), jnp.float32)
    return jnp.asarray(schedule(counts[0][1]), jnp.float32)


def make_eval_step(net, *, stage_index: int):
    """eval_step(params, batch_stats, batch, key) -> metrics (inference mode: means, no noise)."""
    config = net.config

    def eval_step(params, batch_stats, batch, key, stage_step):
        kl_w = kl_ramp(stage_step, config.loss)
        variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
        _, (metrics, _) = stage_objective(net, variables, batch, split_rngs(key),
                                          stage_index=stage_index, kl_w=kl_w, train=False)
        return metrics

    return eval_step
