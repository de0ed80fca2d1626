"""Speaker adversary on time-pooled S (`loss.speaker_adversary_weight`; training only).

Not in the paper: a [project] option against the voice riding in the tokens (issue 14's
disentanglement bar: a linear probe on time-pooled S should identify the speaker far less
well than one on G). A linear head predicts G (stop-gradient, so G is not pulled toward
S) from the utterance mean of S = project_out(codes); between S and the head sits a
gradient reversal, so one loss trains the head to predict G and the semantic branch to
defeat it. No speaker labels are needed: G is the label-free stand-in for the voice.
The head lives in the training tree only ("adversary"), so export is unaffected.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.layers.common import EMBED, MLP, NORM, torch_dense


@jax.custom_vjp
def grad_reverse(x):
    """Identity forward; the backward pass negates the cotangent."""
    return x


def _grad_reverse_fwd(x):
    return x, None


def _grad_reverse_bwd(_, g):
    return (jax.tree_util.tree_map(jnp.negative, g),)


grad_reverse.defvjp(_grad_reverse_fwd, _grad_reverse_bwd)


def pooled(s, tmask):
    """Masked time mean: s [B, T', d], tmask [B, T'] (1 = valid) -> [B, d] float32."""
    w = jnp.asarray(tmask, jnp.float32)[..., None]
    total = jnp.sum(s.astype(jnp.float32) * w, axis=1)
    return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)


class SpeakerAdversary(nn.Module):
    """Linear head: pooled S [B, d] -> predicted G [B, d_g], behind a gradient reversal."""

    g_dim: int

    @nn.compact
    def __call__(self, s_pooled):
        head = torch_dense(self.g_dim, s_pooled.shape[-1], (EMBED, MLP), "head", bias_axis=NORM)
        return head(grad_reverse(s_pooled.astype(jnp.float32)))


def adversary_loss(prediction, g, eps: float = 1e-8):
    """MSE of the head's prediction against stop_gradient(G), over the batch variance of G
    (both [B, d_g] -> scalar): 1 = no better than the batch mean of G, 0 = G read exactly.

    The normalisation makes the weight scale-free: G's spread is set by the paralinguistic
    VAE (unnormalised, the 2026-12-06 A/B read an MSE of 4e-4 and the reversal pushed with
    almost nothing). Minimised by the head; through the reversal, maximised by the semantic
    branch. The variance is a stop-gradient constant of the batch."""
    target = jax.lax.stop_gradient(g.astype(jnp.float32))
    spread = jnp.mean(jnp.var(target, axis=0))
    return jnp.mean((prediction.astype(jnp.float32) - target) ** 2) / (spread + eps)
