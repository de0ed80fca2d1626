"""The declarative stage table (training.md §4) and the optimiser labels derived from it.

Parameters live in one tree {"codec": {...}, "aux": {...}}. A stage names, by path prefix,
which modules train and which are frozen; `param_labels` turns the rules into a label per
leaf ("train" / "frozen") and asserts that every parameter is covered by exactly one rule.
The same labels decide which BatchNorm statistics may change.
"""

from __future__ import annotations

from dataclasses import dataclass


from secoustic_jax.config.train import STAGE_NAMES, ExperimentConfig
from secoustic_jax.tree import flatten, unflatten

TRAIN, FROZEN = "train", "frozen"

STAGE1_MODULES = ("codec/encoder", "codec/encoder_transformer", "codec/decoder_transformer",
                  "codec/decoder")
STAGE2_MODULES = ("codec/vae_semantic_transformer", "codec/fsq", "codec/paralinguistic_encoder",
                  "codec/semantic_connector", "aux", "adversary")


@dataclass(frozen=True)
class StageSpec:
    """One row of the stage table.

    trainable / frozen: path prefixes ("codec/encoder", "aux"); together they must cover
    every parameter exactly once. losses: term -> name of its LossConfig weight field (or a
    number). forward: which forward the step runs ("acoustic" = E, T_ac, D only; "full").
    """

    name: str
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    losses: tuple[tuple[str, str], ...]
    forward: str


STAGE_TABLE: dict[str, StageSpec] = {
    "acoustic": StageSpec("acoustic", STAGE1_MODULES, STAGE2_MODULES,
                          (("mel", "mel_weight"),), "acoustic"),
    "semantic": StageSpec("semantic", STAGE2_MODULES, STAGE1_MODULES,
                          (("acoustic", "acoustic_weight"), ("contrastive", "contrastive_weight"),
                           ("kl_semantic", "kl"), ("kl_paralinguistic", "kl"),
                           ("speaker_adversary", "speaker_adversary_weight"),
                           ("code_usage", "code_usage_weight")), "full"),
    "finetune": StageSpec("finetune", STAGE1_MODULES + STAGE2_MODULES, (),
                          (("mel", "mel_weight"), ("mel_connector", "mel_weight"),
                           ("acoustic", "acoustic_weight"), ("contrastive", "contrastive_weight"),
                           ("kl_semantic", "kl"), ("kl_paralinguistic", "kl"),
                           ("speaker_adversary", "speaker_adversary_weight"),
                           ("code_usage", "code_usage_weight")), "full"),
}
assert tuple(STAGE_TABLE) == STAGE_NAMES


class StageMaskError(ValueError):
    """A parameter is matched by no rule or by more than one rule."""


def matches(path: str, prefix: str) -> bool:
    """Whether '/'-joined `path` lies under `prefix` (whole path components)."""
    return path == prefix or path.startswith(prefix + "/")


def path_labels(paths, spec: StageSpec) -> dict[str, str]:
    """Label per '/'-joined path; raises StageMaskError unless each path has exactly one rule."""
    out, problems = {}, []
    for p in paths:
        hits = [(TRAIN, r) for r in spec.trainable if matches(p, r)]
        hits += [(FROZEN, r) for r in spec.frozen if matches(p, r)]
        if len(hits) != 1:
            problems.append(f"{p}: {'no rule' if not hits else 'rules ' + str([h[1] for h in hits])}")
        else:
            out[p] = hits[0][0]
    if problems:
        raise StageMaskError(f"stage {spec.name!r}: every parameter must match exactly one "
                             f"rule; {len(problems)} do not: " + "; ".join(problems[:8]))
    return out


def param_labels(tree, spec: StageSpec):
    """Same-structure tree of "train"/"frozen" labels for a nested-dict tree of arrays."""
    flat = flatten(tree, "/")
    labels = path_labels(flat.keys(), spec)
    return unflatten(labels, "/")


def stats_labels(batch_stats, spec: StageSpec):
    """Labels for BatchNorm statistics: they follow the module they belong to.

    batch_stats live under the codec (e.g. codec/paralinguistic_encoder/batchnorm_1/mean);
    a statistic is updated only where its module's prefix trains.
    """
    return param_labels(batch_stats, spec) if batch_stats else {}


def stage_spec(index: int) -> StageSpec:
    return STAGE_TABLE[STAGE_NAMES[index]]


# Optional terms (the adversary's head exists only when its weight is > 0; the code-usage
# term costs a [frames, K] tensor): at weight 0 they are not computed.
OPTIONAL_TERMS = ("speaker_adversary", "code_usage")


def loss_weights(config: ExperimentConfig, index: int, kl_w) -> dict:
    """term -> weight for stage `index`; "kl" entries take the ramp value `kl_w` (G's times
    `loss.kl_paralinguistic_scale`); optional terms (OPTIONAL_TERMS) at weight 0, and the
    adversary outside `loss.speaker_adversary_stages`, are left out."""
    spec = stage_spec(index)
    weights = {term: (kl_w if field == "kl" else getattr(config.loss, field))
               for term, field in spec.losses}
    if "kl_paralinguistic" in weights:
        weights["kl_paralinguistic"] = kl_w * config.loss.kl_paralinguistic_scale
    if STAGE_NAMES[index] not in config.loss.speaker_adversary_stages:
        weights.pop("speaker_adversary", None)
    return {t: w for t, w in weights.items() if not (t in OPTIONAL_TERMS and w == 0)}


def stage_start_steps(config: ExperimentConfig) -> dict[int, int]:
    """Global step at which each enabled stage starts (stages run back to back)."""
    out, step = {}, 0
    for i in config.enabled_stages:
        out[i] = step
        step += config.stages[i].steps
    return out
