"""Per-stage optimiser: optax.multi_transform over the stage labels (training.md §4, §8).

"train" leaves: clip_by_global_norm (trainable leaves only) -> AdamW (decay on matrices only)
with warm-up + cosine that restarts at each stage. "frozen" leaves: set_to_zero, which keeps
no state, so frozen parameters cost no optimiser memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.training.stages import FROZEN, TRAIN, matches, param_labels, stage_spec
from secoustic_jax.tree import flatten, unflatten

NO_DECAY_NAMES = ("bias", "scale", "logit_scale", "alpha", "embedding")


def lr_schedule(config: ExperimentConfig, index: int) -> optax.Schedule:
    """Linear warm-up to lr * mult, cosine decay to end_lr * mult over the stage."""
    o, s = config.optim, config.stages[index]
    peak, end = o.lr * s.lr_multiplier, o.end_lr * s.lr_multiplier
    warm = min(o.warmup_steps, max(s.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warm, max(s.steps, warm + 1), end)


def decay_mask(params):
    """True for weight matrices (ndim >= 2, not embeddings); biases, norms, LayerScale, tau,
    Snake alpha and embedding tables get no weight decay."""
    # A MaskedNode (the other label's leaves) has no shape.
    return unflatten({k: (len(getattr(v, "shape", ())) >= 2 and k[-1] not in NO_DECAY_NAMES)
                      for k, v in flatten(params).items()})


def lr_scale_tree(params, rules) -> dict:
    """Same-structure tree of update multipliers: the longest prefix of `rules` ((path
    prefix, multiplier) pairs, whole "/"-separated components) that matches a leaf's path,
    else 1.0. A rule that matches no leaf is an error (a misspelt path would do nothing)."""
    rules = [(prefix.strip("/"), float(mult)) for prefix, mult in rules]
    used, out = set(), {}
    for path in flatten(params, "/"):
        hits = [(p, m) for p, m in rules if matches(path, p)]
        best = max(hits, key=lambda h: len(h[0]), default=None)
        if best is not None:
            used.add(best[0])
        out[path] = 1.0 if best is None else best[1]
    unused = [p for p, _ in rules if p not in used]
    if unused:
        raise ValueError(f"optim.lr_scale: no parameter under {unused}")
    return unflatten(out, "/")


def make_optimizer(config: ExperimentConfig, index: int, params) -> optax.GradientTransformation:
    """The stage optimiser; `params` (arrays or ShapeDtypeStructs) fixes the label tree."""
    o = config.optim
    # clip_norm 0: identity in the clip's place, so the state layout (chain[0] = clip,
    # chain[1] = AdamW) is the same with and without clipping.
    chain = [optax.clip_by_global_norm(o.clip_norm) if o.clip_norm > 0 else optax.identity()]
    chain.append(optax.adamw(lr_schedule(config, index), b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=decay_mask))
    labels = param_labels(params, stage_spec(index))
    opt = optax.multi_transform({TRAIN: optax.chain(*chain), FROZEN: optax.set_to_zero()}, labels)
    if not o.lr_scale:  # no wrapper: the state layout of runs without rules is unchanged
        return opt
    scales = lr_scale_tree(params, o.lr_scale)
    # After the whole transform: frozen leaves' updates are zeros, and stay zeros.
    scale = optax.stateless(
        lambda updates, _: jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, scales))
    return optax.chain(opt, scale)


def count_state_leaves(opt_state) -> int:
    """Number of array elements held by an optimiser state (for the no-state-on-frozen check)."""
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(opt_state))
