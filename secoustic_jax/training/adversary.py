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
- "speaker": the confusion form with speaker labels instead of G: the head is a linear
  classifier of the training speaker (cross-entropy on stop-gradient S), and the branch
  pulls its prediction to the uniform distribution. It reads pooled S the way the
  disentanglement probe does (eval/disentangle.py), so every direction in which the
  probe would find the voice is one the head learns and the branch is pushed out of.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    """Linear head: pooled S [B, d] -> (head_pred, branch_pred), each [B, out] or None;
    out = d_g, or `classes` (logits) in "speaker" mode.

    "reverse": (head(reverse(S)), None). "confusion" / "speaker": (head(stop_gradient(S)),
    the same affine map with stop-gradient parameters applied to S): the first trains the
    head only, the second the semantic branch only."""

    g_dim: int
    mode: str = "reverse"
    classes: int = 0

    @nn.compact
    def __call__(self, s_pooled):
        s = s_pooled.astype(jnp.float32)
        out = self.classes if self.mode == "speaker" else self.g_dim
        head = torch_dense(out, s.shape[-1], (EMBED, MLP), "head", bias_axis=NORM)
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


def speaker_confusion_loss(head_logits, branch_logits, labels):
    """"speaker" mode: logits [B, K], labels [B] int (None in validation, whose speaker
    indices are the split's own) -> (scalar, {"head", "confusion", "head_accuracy"}).

    head: cross-entropy of the head against the labels over ln K (1 = chance, 0 = every
    speaker named); confusion: cross-entropy of the branch logits against the uniform
    distribution, minus its minimum ln K, over ln K: 0 when, through the current head,
    pooled S names no speaker. Without labels the head part is reported as 0."""
    k = head_logits.shape[-1]
    log_k = jnp.log(jnp.float32(k))
    logp_branch = jax.nn.log_softmax(branch_logits.astype(jnp.float32), axis=-1)
    confusion = (jnp.mean(-jnp.mean(logp_branch, axis=-1)) - log_k) / log_k
    if labels is None:
        zero = jnp.zeros((), jnp.float32)
        return confusion, {"head": zero, "confusion": confusion, "head_accuracy": zero}
    logp_head = jax.nn.log_softmax(head_logits.astype(jnp.float32), axis=-1)
    labels = jnp.asarray(labels, jnp.int32)
    head = -jnp.mean(jnp.take_along_axis(logp_head, labels[:, None], axis=-1)) / log_k
    acc = jnp.mean((jnp.argmax(head_logits, axis=-1) == labels).astype(jnp.float32))
    return head + confusion, {"head": head, "confusion": confusion, "head_accuracy": acc}


def adversary_term(head_pred, branch_pred, target, mode: str):
    """The L_adv term of `mode` -> (scalar, metrics). target: G [B, d_g] ("reverse",
    "confusion") or speaker labels [B] / None ("speaker")."""
    if mode == "reverse":
        return adversary_loss(head_pred, target), {}
    if mode == "confusion":
        return confusion_loss(head_pred, branch_pred, target)
    return speaker_confusion_loss(head_pred, branch_pred, target)


def check_speaker_labels(labels, classes: int) -> None:
    """Host-side guard of "speaker" mode: labels [B] ints in [0, classes), or ValueError
    naming a bad one (take_along_axis would silently clip it to a wrong speaker)."""
    labels = np.asarray(labels)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"speaker adversary: batch speaker index {hi if hi >= classes else lo} "
                         f"is outside [0, {classes}); set loss.speaker_adversary_classes to at "
                         "least the number of training speakers")


def label_guard(put, loss_config):
    """`put` (host batch -> device batch) with the "speaker"-mode label check in front;
    `put` itself when that mode is off."""
    if loss_config.speaker_adversary_weight <= 0 or loss_config.speaker_adversary_mode != "speaker":
        return put

    def checked(batch):
        check_speaker_labels(batch["speaker"], loss_config.speaker_adversary_classes)
        return put(batch)

    return checked
