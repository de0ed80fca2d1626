"""Forward + weighted loss of one stage, as a function of the variables (for jax.grad).

`stage_objective` runs the stage's forward (training/stages.py: "acoustic" or "full") and
combines the losses of the stage table with their weights. Metrics are float32 scalars,
except `code_counts` [codebook] (token histogram over valid tokens, summed on the host into
usage windows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from secoustic_jax import losses
from secoustic_jax.audio.warp import sample_alpha, warp_log_mel
from secoustic_jax.config.train import STAGE_NAMES, ExperimentConfig
from secoustic_jax.quantizer.fsq import bound
from secoustic_jax.training.adversary import adversary_term
from secoustic_jax.training.model import TrainNet, token_mask
from secoustic_jax.training.stages import loss_weights, stage_spec


def kl_step(config: ExperimentConfig, step, stage_step):
    """The step counter the KL ramp reads (stage step by default, training.md §3)."""
    return stage_step if config.loss.kl_ramp_uses_stage_step else step


def _codebook_metrics(out, tmask, codebook: int):
    """Token histogram [codebook] over valid tokens and the FSQ saturation fraction."""
    tokens = out.tokens.reshape(-1)
    w = tmask.reshape(-1)
    counts = jnp.zeros((codebook,), jnp.float32).at[tokens].add(w)
    bounded = 0.999 * jnp.tanh(out.fsq_projected.astype(jnp.float32))
    sat = jnp.sum(jnp.mean(jnp.abs(bounded) > 0.99, axis=-1) * tmask) / jnp.maximum(jnp.sum(tmask), 1)
    return {"code_counts": counts, "fsq_saturation": sat,
            "zero_code_fraction": counts[(codebook - 1) // 2] / jnp.maximum(jnp.sum(w), 1.0)}


def stage_objective(net: TrainNet, variables, batch, rngs, *, stage_index: int, kl_w,
                    train: bool = True):
    """-> (total loss, (metrics, new batch_stats)). variables: {"params", "batch_stats"}."""
    config = net.config
    spec = stage_spec(stage_index)
    weights = loss_weights(config, stage_index, kl_w)
    mel, mel_mask = batch["mel"], batch["mel_mask"]
    metrics, terms = {}, {}
    new_stats = variables.get("batch_stats", {})
    if spec.forward == "acoustic":
        _, mel_hat = net.apply(variables, mel, method=TrainNet.acoustic)
        terms["mel"], m = losses.mel_loss(mel_hat, mel, mel_mask, config.loss.mel_distance)
    else:
        aug = config.augment
        if train and aug.voice_warp > 0 and STAGE_NAMES[stage_index] in aug.voice_warp_stages:
            batch = voice_warped(batch, jax.random.fold_in(rngs["sample"], 1),
                                 aug.voice_warp, config.codec.mel, aug.voice_warp_fraction)
        res, mutated = net.apply(variables, batch, train=train, with_mel="mel" in weights,
                                 method=TrainNet.full, rngs=rngs, mutable=["batch_stats"])
        new_stats = mutated.get("batch_stats", new_stats)
        terms, m = _full_terms(config, res, batch, rngs["contrastive"], weights)
    metrics.update(m)
    total = jnp.zeros((), jnp.float32)
    for term, w in weights.items():
        metrics[f"loss/{term}"] = terms[term]
        metrics[f"weighted/{term}"] = w * terms[term]
        total = total + w * terms[term]
    metrics["loss/total"] = total
    metrics["kl_weight"] = jnp.asarray(kl_w, jnp.float32)
    return total, (metrics, new_stats)


def voice_warped(batch, key, max_warp: float, mel_config, fraction: float = 1.0):
    """The batch with its mel [B, T, 80] and prompt_mel [B, P, 80] warped by one alpha per
    item (`augment.voice_warp`): the same voice in the target and in the prompt, so G still
    describes the utterance. Each item is warped with probability `fraction`, else alpha = 1.
    Zero padding stays zero (a constant frame warps to itself)."""
    k_alpha, k_pick = jax.random.split(key)
    b = batch["mel"].shape[0]
    alpha = sample_alpha(k_alpha, b, max_warp)
    if fraction < 1.0:
        alpha = jnp.where(jax.random.uniform(k_pick, (b,)) < fraction, alpha, 1.0)
    return {**batch, "mel": warp_log_mel(batch["mel"], alpha, mel_config),
            "prompt_mel": warp_log_mel(batch["prompt_mel"], alpha, mel_config)}


def _full_terms(config: ExperimentConfig, res, batch, key, weights):
    """All stage-2/3 loss terms from the `TrainNet.full` results."""
    out, lc = res["out"], config.loss
    tmask = token_mask(batch["mel_mask"], config.codec.hop)
    terms, metrics = {}, {}
    terms["acoustic"], _ = losses.acoustic_loss(out.connector_out, out.acoustic, tmask)
    cmask = tmask * res["valid"]
    phone_ids = jnp.take_along_axis(batch["phones"], res["pos"], axis=1)
    terms["contrastive"], m = losses.contrastive_loss(
        res["u"], res["v"], cmask, res["scale"], phone_ids=phone_ids,
        mask_same_phone=lc.mask_same_phone_negatives, max_frames=lc.max_contrastive_frames, key=key)
    metrics.update({f"contrastive/{k}": v for k, v in m.items() if k != "contrastive"})
    per_item = lc.kl_hinge == "per_item"
    terms["kl_semantic"], m = losses.kl_hinge_loss(out.semantic_mu, out.semantic_logvar, tmask,
                                                   lc.kl_margin_semantic, per_item)
    metrics.update({f"kl_semantic/{k}": v for k, v in m.items()})
    umask = jnp.ones(out.g_mu.shape[:1], jnp.float32)
    terms["kl_paralinguistic"], m = losses.kl_hinge_loss(out.g_mu, out.g_logvar, umask,
                                                         lc.kl_margin_paralinguistic, per_item)
    metrics.update({f"kl_paralinguistic/{k}": v for k, v in m.items()})
    if "mel" in weights:
        dist = config.loss.mel_distance
        terms["mel"], m = losses.mel_loss(out.mel_from_acoustic, batch["mel"], batch["mel_mask"],
                                          dist)
        metrics["mel_mse/acoustic"] = m["mel_mse"]
        terms["mel_connector"], m = losses.mel_loss(res["mel_connector"], batch["mel"],
                                                    batch["mel_mask"], dist)
        metrics["mel_mse/connector"] = m["mel_mse"]
    if "speaker_adversary" in weights:
        terms["speaker_adversary"], m = adversary_term(*res["adversary"],
                                                       mode=lc.speaker_adversary_mode)
        metrics.update({f"speaker_adversary/{k}": v for k, v in m.items()})
    if "code_usage" in weights:
        levels = config.codec.fsq.levels
        terms["code_usage"], m = losses.code_usage_loss(
            bound(out.fsq_projected, levels), levels, tmask, lc.code_usage_temperature)
        metrics.update({f"code_usage/{k}": v for k, v in m.items() if k != "code_usage"})
    metrics.update(_codebook_metrics(out, tmask, config.codec.codebook_size))
    return terms, metrics


def split_rngs(key):
    """Named PRNG streams of one micro-step: VAE noise, dropout, contrastive subsampling."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {"sample": k1, "dropout": k2, "contrastive": k3}
