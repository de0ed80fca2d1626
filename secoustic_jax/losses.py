"""Pure loss functions (training.md §2-§3). Each returns (scalar float32, metrics dict).

All means run over valid (unpadded) elements only; every loss computes in float32 whatever
the compute dtype of its inputs (training.md §8 row 15).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from secoustic_jax.config.train import LossConfig

_NEG = -1e30  # "minus infinity" that keeps 0 * logit finite in masked sums


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def masked_mse(pred, target, mask):
    """Sum over valid (b, t) and all channels of (pred - target)^2 / (C * #valid).

    pred [B, T_p, C] with T_p >= T (extra decoded frames are ignored, training.md §2.1),
    target [B, T, C], mask [B, T] (1 = valid). -> (loss, {"count": #valid frames}).
    """
    return _masked_mean(jnp.square, pred, target, mask, "masked_mse")


def masked_l1(pred, target, mask):
    """As `masked_mse` with |pred - target| in place of the square."""
    return _masked_mean(jnp.abs, pred, target, mask, "masked_l1")


def _masked_mean(dist, pred, target, mask, name):
    t = target.shape[1]
    if pred.shape[1] < t or pred.shape[0] != target.shape[0] or pred.shape[2] != target.shape[2]:
        raise ValueError(f"{name}: pred {pred.shape} cannot cover target {target.shape}")
    m = _f32(mask)
    err = dist(_f32(pred[:, :t]) - _f32(target)) * m[..., None]
    count = jnp.sum(m)
    return jnp.sum(err) / (target.shape[2] * jnp.maximum(count, 1.0)), {"count": count}


_MEL_DISTANCE_FNS = {"mse": masked_mse, "l1": masked_l1}  # keys: config MEL_DISTANCES


def mel_loss(mel_hat, mel, mel_mask, distance: str = "mse"):
    """L_mel on the log mel: MSE (the paper) or L1 (`loss.mel_distance`).

    mel_hat [B, h*T', 80], mel [B, T, 80], mel_mask [B, T].
    """
    loss, m = _MEL_DISTANCE_FNS[distance](mel_hat, mel, mel_mask)
    # The MSE is reported whatever the distance, so curves of runs stay comparable.
    mse = loss if distance == "mse" else masked_mse(mel_hat, mel, mel_mask)[0]
    return loss, {"mel": loss, "mel_frames": m["count"], "mel_mse": mse}


def code_usage_loss(bounded, levels, mask, temperature: float):
    """1 - I(frame; code) / ln K for the soft FSQ assignment of a batch ([project]).

    bounded [B, T', D]: the FSQ bound b(u) before rounding, in level units (rounding gives
    the centres k - floor(L_d / 2), k < L_d). mask [B, T'] (1 = valid token). levels: the
    D level counts, K = prod(levels). Each dimension's soft assignment is
    p_d(k) = softmax_k(-(b_d - c_k)^2 / temperature); a frame's code distribution is their
    product over the K codes (index order of quantizer/fsq.py: dimension 0 least
    significant). I = H(mean of the frames' distributions) - mean of their entropies: high
    when the batch spreads over many codes and each frame sits firmly in one, so the term
    cannot be lowered by parking values on the rounding thresholds. 0 <= loss <= 1.
    Memory: [B T', K] float32 (6561 codes x 1k frames = 26 MB).
    """
    b = _f32(bounded).reshape(-1, bounded.shape[-1])
    w = _f32(mask).reshape(-1)
    n = jnp.maximum(jnp.sum(w), 1.0)
    joint = jnp.ones((b.shape[0], 1), jnp.float32)
    frame_h = jnp.zeros((b.shape[0],), jnp.float32)
    for d, lv in enumerate(levels):
        centres = jnp.arange(lv, dtype=jnp.float32) - lv // 2
        logp = jax.nn.log_softmax(-jnp.square(b[:, d:d + 1] - centres) / temperature, axis=-1)
        p = jnp.exp(logp)
        frame_h = frame_h - jnp.sum(p * logp, axis=-1)
        joint = (p[:, :, None] * joint[:, None, :]).reshape(b.shape[0], -1)
    mean = jnp.sum(joint * w[:, None], axis=0) / n
    batch_h = -jnp.sum(mean * jnp.log(jnp.maximum(mean, 1e-30)))
    frame_h = jnp.sum(frame_h * w) / n
    loss = 1.0 - (batch_h - frame_h) / sum(math.log(lv) for lv in levels)
    return loss, {"code_usage": loss, "batch_entropy_bits": batch_h / jnp.log(2.0),
                  "frame_entropy_bits": frame_h / jnp.log(2.0)}


def acoustic_loss(a_hat, a_star, token_mask):
    """L_ac: MSE between connector output A-hat and frozen A* [B, T', d] over valid tokens."""
    loss, _ = masked_mse(a_hat, jax.lax.stop_gradient(a_star), token_mask)
    return loss, {"acoustic": loss}


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(lv)) || N(0, I)) summed over the last axis: [..., d] -> [...]."""
    mu, logvar = _f32(mu), _f32(logvar)
    return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def kl_hinge_loss(mu, logvar, mask, margin: float, per_item: bool = True):
    """mean over valid items of max(0, KL - margin) (or max(0, mean KL - margin)).

    mu, logvar [..., d]; mask [...] (1 = valid item: a frame or an utterance).
    Metrics: raw KL mean before the hinge and the fraction of items whose hinge is active.
    """
    kl = kl_divergence(mu, logvar)
    m = _f32(mask)
    n = jnp.maximum(jnp.sum(m), 1.0)
    raw = jnp.sum(kl * m) / n
    if per_item:
        loss = jnp.sum(jnp.maximum(kl - margin, 0.0) * m) / n
    else:
        loss = jnp.maximum(raw - margin, 0.0)
    active = jnp.sum(_f32(kl > margin) * m) / n
    return loss, {"kl_raw": raw, "kl_active": active}


def kl_ramp(step, cfg: LossConfig):
    """w(step) = kl_weight * clip((step - start) / (end - start), 0, 1) (training.md §3)."""
    step = _f32(step)
    span = max(cfg.kl_ramp_end - cfg.kl_ramp_start, 1)
    if cfg.kl_ramp_end == cfg.kl_ramp_start:  # a step function at `start`
        return cfg.kl_weight * _f32(step >= cfg.kl_ramp_start)
    return cfg.kl_weight * jnp.clip((step - cfg.kl_ramp_start) / span, 0.0, 1.0)


def subsample_frames(key, valid, max_frames: int):
    """Indices of at most `max_frames` valid rows of a flat [N] mask, uniformly at random.

    -> (index [K] int32, chosen_valid [K] bool) with K = min(N, max_frames). When N <= K
    every row is kept in order (no randomness), so small batches are exact.
    """
    n = valid.shape[0]
    if n <= max_frames:
        return jnp.arange(n, dtype=jnp.int32), valid
    prio = jnp.where(valid, jax.random.uniform(key, (n,)), -1.0)  # valid rows first, random
    _, index = jax.lax.top_k(prio, max_frames)
    return index.astype(jnp.int32), valid[index]


def contrastive_loss(u, v, mask, logit_scale, *, phone_ids=None, mask_same_phone=False,
                     max_frames: int = 8192, key=None):
    """Frame-level symmetric InfoNCE over all valid frames of the batch (training.md §2.3).

    Args:
      u: [B, T, D] speech-side embeddings (already projected and L2-normalised).
      v: [B, T, D] phone-side embeddings, frame-aligned with u.
      mask: [B, T] valid frames. Invalid rows/columns get -inf logits and zero weight, so
        the loss does not depend on how much padding there is.
      logit_scale: scalar exp(tau) (already clamped).
      phone_ids: [B, T] phone IDs per frame; with mask_same_phone, off-diagonal pairs that
        share an ID are removed from both softmaxes.
      max_frames: cap on N; above it a uniform subset is drawn with `key`.
    Returns:
      (loss, {"contrastive", "acc_s2p", "acc_p2s", "frames", "logit_scale"}).
    """
    b, t, dim = u.shape
    uf, vf = _f32(u).reshape(b * t, dim), _f32(v).reshape(b * t, dim)
    valid = jnp.asarray(mask, bool).reshape(b * t)
    ids = None if phone_ids is None else jnp.asarray(phone_ids).reshape(b * t)
    if b * t > max_frames:
        if key is None:
            raise ValueError("contrastive_loss needs a PRNG key when B*T exceeds max_frames")
        idx, valid = subsample_frames(key, valid, max_frames)
        uf, vf = uf[idx], vf[idx]
        ids = None if ids is None else ids[idx]
    logits = _f32(logit_scale) * (uf @ vf.T)  # [N, N]: rows speech, columns phone
    allowed = valid[:, None] & valid[None, :]
    if mask_same_phone and ids is not None:
        eye = jnp.eye(logits.shape[0], dtype=bool)
        allowed = allowed & ((ids[:, None] != ids[None, :]) | eye)
    logits = jnp.where(allowed, logits, _NEG)
    w = _f32(valid)
    n = jnp.maximum(jnp.sum(w), 1.0)
    diag = jnp.diagonal(logits)
    loss_s2p = jnp.sum((jax.nn.logsumexp(logits, axis=1) - diag) * w) / n
    loss_p2s = jnp.sum((jax.nn.logsumexp(logits, axis=0) - diag) * w) / n
    loss = 0.5 * (loss_s2p + loss_p2s)
    rows = jnp.arange(logits.shape[0])
    acc_s2p = jnp.sum(_f32(jnp.argmax(logits, axis=1) == rows) * w) / n
    acc_p2s = jnp.sum(_f32(jnp.argmax(logits, axis=0) == rows) * w) / n
    return loss, {"contrastive": loss, "acc_s2p": acc_s2p, "acc_p2s": acc_p2s, "frames": jnp.sum(w),
                  "logit_scale": _f32(logit_scale)}
