"""Speaker adversary on time-pooled S (`loss.speaker_adversary_weight`; training only).

Not in the paper: a [project] option against the voice riding in the tokens (issue 14's
disentanglement bar: a linear probe on time-pooled S should identify the speaker far less
well than one on G). A linear head predicts G (stop-gradient, so G is not pulled toward
S) from the utterance mean of S = project_out(codes); between S and the head sits a
gradient reversal, so one loss trains the head to predict G and the semantic branch to
defeat it. No speaker labels are needed: G is the label-free stand-in for the voice.
The head lives in the training tree only ("adversary"), so export is unaffected.

Two ways to train the semantic branch against the head (`loss.speaker_adversary_mode`):
- "reverse": one loss, the head descends it, the branch ascends it through the reversal.
  The branch's objective is unbounded: it can win by wrecking S (measured: FSQ saturated,
  L_con at chance, docs/training.md).
- "confusion" (Tzeng et al. 2015, domain confusion): the head descends its MSE on a
  stop-gradient S; the branch, through a stop-gradient copy of the head, moves the head's
  prediction toward the batch mean of G, i.e. makes pooled S read as "no voice in
  particular". Bounded below by 0; met when the head cannot read G from pooled S.
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
    """Linear head: pooled S [B, d] -> (head_pred, branch_pred), each [B, d_g] or None.

    "reverse": (head(reverse(S)), None). "confusion": (head(stop_gradient(S)), the same
    affine map with stop-gradient parameters applied to S): the first trains the head only,
    the second the semantic branch only."""

    g_dim: int
    mode: str = "reverse"

    @nn.compact
    def __call__(self, s_pooled):
        s = s_pooled.astype(jnp.float32)
        head = torch_dense(self.g_dim, s.shape[-1], (EMBED, MLP), "head", bias_axis=NORM)
        if self.mode == "reverse":
            return head(grad_reverse(s)), None
        pred = head(jax.lax.stop_gradient(s))
        p = jax.lax.stop_gradient(nn.unbox(head.variables["params"]))
        return pred, s @ p["kernel"] + p["bias"]


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


def confusion_loss(head_pred, branch_pred, g, eps: float = 1e-8):
    """Domain-confusion form, all [B, d_g] -> (scalar, {"head", "confusion"}).

    head: adversary_loss(head_pred, g) (1 = the batch mean of G, 0 = G read exactly);
    confusion: MSE of branch_pred against the batch mean of stop_gradient(G), over the same
    spread: 0 when, through the current head, every utterance's pooled S reads as the
    average voice. Their sum is the term; the gradients never mix (see SpeakerAdversary),
    so under Adam the weight sets only the branch's share of the objective."""
    target = jax.lax.stop_gradient(g.astype(jnp.float32))
    spread = jnp.mean(jnp.var(target, axis=0)) + eps
    head = jnp.mean((head_pred.astype(jnp.float32) - target) ** 2) / spread
    centre = jnp.mean(target, axis=0, keepdims=True)
    confusion = jnp.mean((branch_pred.astype(jnp.float32) - centre) ** 2) / spread
    return head + confusion, {"head": head, "confusion": confusion}


def adversary_term(head_pred, branch_pred, g):
    """The L_adv term of either mode (branch_pred None = "reverse") -> (scalar, metrics)."""
    if branch_pred is None:
        return adversary_loss(head_pred, g), {}
    return confusion_loss(head_pred, branch_pred, g)
