"""Paralinguistic (prompt) encoder: mel [B, T_p, 80] -> (mu, logvar) [B, 512] (model.md §8).

Six blocks of conv (time kernel 3, "same") -> BatchNorm -> ReLU, a residual SE block, a
PyTorch-layout GRU whose final state feeds the `dense_mu` / `dense_var` heads.

The official layers are Conv2d 3x3 on [B, 80, T, 1]; only the middle width column of each
kernel ever meets data. Parameters keep the full `[3 time, 3 width, in, out]` kernel so the
count (415 936) and checkpoint round trips match; the forward uses `kernel[:, 1]` as a
Conv1d over time, so the outer columns get exactly zero gradient.

Right-padded batches: pass `lengths [B]`. Activations at padded frames are zeroed before
every conv (so the "same" padding at an item's true end sees zeros), the SE mean and the
training BatchNorm statistics use valid frames only, and the GRU state is taken at each
item's last valid step. In inference mode a padded item then equals that item run alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.model import ParalinguisticConfig
from secoustic_jax.layers.common import (CONV_IN, CONV_K, CONV_OUT, EMBED, HIDDEN, NORM,
                                         constant, param, torch_dense, torch_uniform)
from secoustic_jax.layers.gru import GRU

_DN = ("NWC", "WIO", "NWC")


class MiddleColumnConv(nn.Module):
    """Official Conv2d 3x3 "same" on width 1 == Conv1d over time with kernel[:, 1].

    x [B, T, C_in] -> [B, T, features]. Params: kernel [3 time, 3 width, in, out], bias [out].
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        init = torch_uniform(in_features * 3 * 3)  # torch Conv2d fan_in = in * kh * kw
        # The width axis has no logical name of its own (it is never sharded): None.
        kernel = param(self, "kernel", init, (3, 3, in_features, self.features),
                       (CONV_K, None, CONV_IN, CONV_OUT))
        bias = param(self, "bias", init, (self.features,), (CONV_OUT,))
        y = jax.lax.conv_general_dilated(x, kernel[:, 1], window_strides=(1,),
                                         padding=[(1, 1)], dimension_numbers=_DN)
        return y + bias


class TorchBatchNorm(nn.Module):
    """BatchNorm over (B, T) per channel with PyTorch semantics. x [B, T, C] -> [B, T, C].

    Inference normalises with the running statistics. Training (`train=True`, collection
    `batch_stats` mutable) normalises with the biased batch variance, and updates
    running <- (1 - momentum) running + momentum batch with the **unbiased** variance for
    `var`, then increments `num_batches_tracked`, as torch does. `mask [B, T, 1]` restricts
    the batch statistics to valid frames.
    """

    eps: float = 1e-5
    momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
        c = x.shape[-1]
        scale = param(self, "scale", constant(1.0), (c,), (NORM,))
        bias = param(self, "bias", constant(0.0), (c,), (NORM,))
        stat = lambda name, value: self.variable(  # noqa: E731
            "batch_stats", name, nn.with_logical_partitioning(jnp.full, (NORM,)), (c,), value)
        run_mean, run_var = stat("mean", 0.0), stat("var", 1.0)
        count = self.variable("batch_stats", "num_batches_tracked",
                              nn.with_logical_partitioning(jnp.zeros, ()), (), jnp.int32)
        if not train:
            mean, var = run_mean.value, run_var.value
        else:
            if mask is None:
                mask = jnp.ones(x.shape[:2] + (1,), x.dtype)
            n = jnp.sum(mask)
            mean = jnp.sum(x * mask, axis=(0, 1)) / n
            var = jnp.sum(jnp.square(x - mean) * mask, axis=(0, 1)) / n  # biased: normalises
            if not self.is_initializing():  # init leaves the torch defaults (0, 1, 0)
                unbiased = var * n / jnp.maximum(n - 1, 1)  # torch: running_var is unbiased
                m = self.momentum
                run_mean.value = (1 - m) * run_mean.value + m * mean
                run_var.value = (1 - m) * run_var.value + m * unbiased
                count.value = count.value + 1
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class SEResidual(nn.Module):
    """x <- x * sigmoid(fc_2(relu(fc_0(mean_t x)))) + x; x [B, T, C], mask [B, T, 1]."""

    channels: int
    reduction: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        hidden = self.channels // self.reduction
        m = jnp.sum(x * mask, axis=1) / jnp.sum(mask, axis=1)  # mean over valid frames
        fc_0 = torch_dense(hidden, self.channels, (CONV_OUT, HIDDEN), "fc_0", use_bias=False)
        fc_2 = torch_dense(self.channels, hidden, (HIDDEN, CONV_OUT), "fc_2", use_bias=False)
        s = jax.nn.sigmoid(fc_2(nn.relu(fc_0(m))))
        return x * s[:, None, :] + x


def _check_inputs(cfg: ParalinguisticConfig, mel: jax.Array, lengths) -> None:
    if mel.ndim != 3 or mel.shape[-1] != cfg.n_mels:
        raise ValueError(f"ParalinguisticEncoder: mel must be [B, T, {cfg.n_mels}], "
                         f"got {mel.shape}")
    if lengths is None:
        return
    if jnp.shape(lengths) != (mel.shape[0],):
        raise ValueError(f"ParalinguisticEncoder: lengths must be [{mel.shape[0]}], "
                         f"got {jnp.shape(lengths)}")
    if not isinstance(lengths, jax.core.Tracer):  # concrete: check the range on the host
        # numpy, not jnp: inside a trace jnp.min of a captured constant would itself be a
        # tracer and int() would fail (ConcretizationTypeError).
        lo, hi = int(np.min(np.asarray(lengths))), int(np.max(np.asarray(lengths)))
        if lo < 1 or hi > mel.shape[1]:
            raise ValueError(f"ParalinguisticEncoder: lengths must lie in [1, {mel.shape[1]}], "
                             f"got min {lo} max {hi}")


class ParalinguisticEncoder(nn.Module):
    """mel [B, T_p, n_mels] (+ lengths [B]) -> (mu [B, embed_dim], logvar [B, embed_dim]).

    Non-causal, utterance level, float32. `train=True` uses batch statistics and needs
    `mutable=["batch_stats"]`.
    """

    cfg: ParalinguisticConfig

    @nn.compact
    def __call__(self, mel: jax.Array, lengths: jax.Array | None = None, *,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        cfg.validate()
        _check_inputs(cfg, mel, lengths)
        x = mel.astype(jnp.float32)
        steps = x.shape[1]
        if lengths is None:
            mask = jnp.ones(x.shape[:2] + (1,), jnp.float32)
        else:
            mask = (jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None])
            mask = mask[..., None].astype(jnp.float32)
        for i, width in enumerate(cfg.channels, start=1):
            x = MiddleColumnConv(width, name=f"conv2d_{i}")(x * mask)  # zero padded frames
            x = TorchBatchNorm(cfg.bn_eps, cfg.bn_momentum, name=f"batchnorm_{i}")(
                x, mask, train)
            x = nn.relu(x)
        x = SEResidual(cfg.channels[-1], cfg.se_reduction, name="senet")(x, mask)
        h = GRU(cfg.gru_hidden, name="gru")(x, lengths)
        mu = torch_dense(cfg.embed_dim, cfg.gru_hidden, (HIDDEN, EMBED), "dense_mu")(h)
        logvar = torch_dense(cfg.embed_dim, cfg.gru_hidden, (HIDDEN, EMBED), "dense_var")(h)
        return mu, logvar
