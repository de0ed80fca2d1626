"""Training-only phoneme side (training.md §5): phoneme encoder Phi, length regulator, and the
contrastive heads + logit scale. None of it is in the official checkpoint; the trainer keeps
these parameters in the separate `aux` subtree so the codec parameters export cleanly.

Phi: embedding (0 = padding) -> conv front end (Conv1d k5 "same" -> LayerNorm -> ReLU ->
dropout) x3 -> pre-LN non-causal transformer with RoPE and a key-padding mask -> final LN.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.train import LossConfig, PhonemeEncoderConfig
from secoustic_jax.layers.common import (CONV_IN, CONV_K, CONV_OUT, EMBED, MLP, NORM, QKV,
                                         VOCAB, param, torch_dense, torch_uniform)
from secoustic_jax.layers.rope import apply_rope


def _ln(eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (NORM,)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (NORM,)))


def _dense(features: int, fan_in: int, axes, name: str) -> nn.Dense:
    return torch_dense(features, fan_in, axes, name, bias_axis=NORM)


class EncoderLayer(nn.Module):
    """Pre-LN non-causal transformer layer. x [B, P, d], valid [B, P] bool -> [B, P, d]."""

    cfg: PhonemeEncoderConfig

    @nn.compact
    def __call__(self, x, valid, *, train: bool):
        cfg = self.cfg
        d, h = cfg.d_model, cfg.num_heads
        b, p, _ = x.shape
        qkv = _dense(3 * d, d, (EMBED, QKV), "in_proj")(_ln(cfg.norm_eps)(x))
        q, k, v = jnp.split(qkv.reshape(b, p, 3 * h, d // h), 3, axis=2)  # [B, P, H, Dh] each
        pos = jnp.arange(p, dtype=jnp.int32)
        q, k = apply_rope(q, pos, cfg.max_period), apply_rope(k, pos, cfg.max_period)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // h)
        # Key padding: padded phones are never attended to. A fully padded row (an empty
        # utterance) would give NaN, so such rows attend uniformly and are zeroed later.
        logits = jnp.where(valid[:, None, None, :], logits, -1e9)
        att = nn.Dropout(cfg.dropout)(jax.nn.softmax(logits, axis=-1), deterministic=not train)
        a = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, p, d)
        x = x + nn.Dropout(cfg.dropout)(_dense(d, d, (EMBED, EMBED), "out_proj")(a),
                                        deterministic=not train)
        f = _dense(cfg.dim_feedforward, d, (EMBED, MLP), "linear1")(_ln(cfg.norm_eps)(x))
        f = _dense(d, cfg.dim_feedforward, (MLP, EMBED), "linear2")(jax.nn.gelu(f, approximate=False))
        return x + nn.Dropout(cfg.dropout)(f, deterministic=not train)


class PhonemeEncoder(nn.Module):
    """phones [B, P] int32 (0 = padding) -> phone-level embeddings [B, P, d_model] float32.

    Padded positions are zero in the output and never influence valid ones (the conv front
    end re-masks after every block; attention masks padded keys).
    """

    cfg: PhonemeEncoderConfig

    @nn.compact
    def __call__(self, phones, *, train: bool):
        cfg = self.cfg
        if cfg.vocab_size < 1:
            raise ValueError("PhonemeEncoderConfig.vocab_size is 0: resolve it from the phone "
                             "inventory before building the model")
        valid = phones > 0
        mask = valid[..., None].astype(jnp.float32)
        table = param(self, "embedding", nn.initializers.normal(1.0),
                      (cfg.vocab_size, cfg.d_model), (VOCAB, EMBED))
        x = jnp.take(table, phones, axis=0) * mask
        k, d = cfg.conv_kernel, cfg.d_model
        for i in range(cfg.conv_layers):
            conv = nn.Conv(d, (k,), padding="SAME", name=f"conv_{i}",
                           kernel_init=nn.with_logical_partitioning(
                               torch_uniform(d * k), (CONV_K, CONV_IN, CONV_OUT)),
                           bias_init=nn.with_logical_partitioning(torch_uniform(d * k), (NORM,)))
            x = jax.nn.relu(_ln(cfg.norm_eps)(conv(x)))
            x = nn.Dropout(cfg.dropout)(x, deterministic=not train) * mask
        for i in range(cfg.num_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, valid, train=train) * mask
        return _ln(cfg.norm_eps)(x) * mask


def regulator_index(durations, hop: int, num_frames: int):
    """Length regulator as an index: which phone position covers each (token) frame.

    Args:
      durations: [B, P] int mel-frame durations at 86.13 Hz (0 for padded phones).
      hop: mel frames per output frame (1 = 86 Hz, 4 = 21.5 Hz).
      num_frames: static output length T_out.
    Returns:
      (index [B, T_out] int32 in 0..P-1, valid [B, T_out] bool). For hop > 1 boundaries
      are cumulative-rounded: B_j = floor(E_j/hop + 1/2) for j < n, B_n = ceil(T/hop)
      (training.md §5), so totals are exact and zero-token phones are possible.
    """
    d = jnp.asarray(durations, jnp.int32)
    ends = jnp.cumsum(d, axis=-1)  # E_j, [B, P]
    total = ends[:, -1:]  # T per utterance
    if hop > 1:
        n_tok = (total + hop - 1) // hop  # ceil(T / hop)
        rounded = (2 * ends + hop) // (2 * hop)  # floor(E/hop + 1/2) in integers
        # The last real phone (and every padded one after it, whose E_j = T) ends at ceil.
        ends = jnp.where(ends >= total, n_tok, jnp.minimum(rounded, n_tok))
        total = n_tok
    t = jnp.arange(num_frames, dtype=jnp.int32)
    index = jnp.sum(ends[:, None, :] <= t[None, :, None], axis=-1)  # #phones ending by t
    valid = t[None, :] < total
    index = jnp.minimum(index, d.shape[-1] - 1).astype(jnp.int32)
    return index, valid


def length_regulate(phone_embed, durations, hop: int, num_frames: int):
    """Expands phone-level embeddings to frames: [B, P, D] -> ([B, T_out, D], valid [B, T_out]).

    Invalid frames (past the utterance) are zero.
    """
    index, valid = regulator_index(durations, hop, num_frames)
    out = jnp.take_along_axis(phone_embed, index[..., None], axis=1)
    return out * valid[..., None].astype(out.dtype), valid


class ContrastiveAux(nn.Module):
    """The `aux` subtree: Phi, heads h_s (d_codec -> D) and h_p (d_Phi -> D), logit scale tau.

    `__call__(speech, phones, durations, hop, *, train)`:
      speech [B, T', d_codec], phones [B, P], durations [B, P] ->
      (u [B, T', D] unit-norm speech, v [B, T', D] unit-norm phone side, valid [B, T'],
       frame_phone_pos [B, T'] phone position, logit_scale scalar exp(tau) clamped).
    """

    phon: PhonemeEncoderConfig
    loss: LossConfig
    codec_dim: int

    @nn.compact
    def __call__(self, speech, phones, durations, hop: int, *, train: bool):
        dim = self.loss.contrastive_dim
        enc = PhonemeEncoder(self.phon, name="phoneme_encoder")(phones, train=train)
        pf, valid = length_regulate(enc, durations, hop, speech.shape[1])
        index, _ = regulator_index(durations, hop, speech.shape[1])
        u = _dense(dim, self.codec_dim, (EMBED, MLP), "speech_head")(speech.astype(jnp.float32))
        v = _dense(dim, self.phon.d_model, (EMBED, MLP), "phone_head")(pf)
        tau = param(self, "logit_scale", nn.initializers.constant(self.loss.logit_scale_init),
                    (), ())
        scale = jnp.minimum(jnp.exp(tau), self.loss.logit_scale_max)
        return _l2n(u), _l2n(v), valid, index, scale


def _l2n(x, eps: float = 1e-6):
    """L2 normalisation over the last axis (float32)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
