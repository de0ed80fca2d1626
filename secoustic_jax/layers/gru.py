"""Single-layer unidirectional GRU with PyTorch semantics and parameter layout (model.md §8).

Gates are stacked r | z | n along the first axis, as in torch.nn.GRU:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h <- (1 - z) * n + z * h

Flax's GRUCell merges b_ir + b_hr (and z) and so cannot hold torch weights losslessly; this
hand-written cell keeps `weight_ih [3H, I]`, `weight_hh [3H, H]`, `bias_ih [3H]`,
`bias_hh [3H]` exactly as torch stores them (`*_l0` keys without the suffix).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.layers.common import GATES, HIDDEN, param, torch_uniform


def gru_cell(h: jax.Array, gx: jax.Array, weight_hh: jax.Array, bias_hh: jax.Array) -> jax.Array:
    """One PyTorch GRU step. h [B, H]; gx = x @ W_ih^T + b_ih [B, 3H] (precomputed) -> h [B, H]."""
    hidden = h.shape[-1]
    gh = h @ weight_hh.T + bias_hh
    r = jax.nn.sigmoid(gx[:, :hidden] + gh[:, :hidden])
    z = jax.nn.sigmoid(gx[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    n = jnp.tanh(gx[:, 2 * hidden:] + r * gh[:, 2 * hidden:])  # r gates W_hn h + b_hn
    return (1.0 - z) * n + z * h


class GRU(nn.Module):
    """x [B, T, I] (+ optional lengths [B]) -> final hidden state h [B, H], with h0 = 0.

    With `lengths`, item b's state stops updating after step lengths[b] - 1, so the result
    is the state at its last valid step (h0 = 0 for length 0) and right padding is ignored.
    """

    hidden_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        batch, steps, in_features = x.shape
        hdim = self.hidden_size
        init = torch_uniform(hdim)  # torch GRU: every tensor U(-1/sqrt(H), 1/sqrt(H))
        w_ih = param(self, "weight_ih", init, (3 * hdim, in_features), (GATES, HIDDEN),
                     self.param_dtype).astype(self.dtype)
        w_hh = param(self, "weight_hh", init, (3 * hdim, hdim), (GATES, HIDDEN),
                     self.param_dtype).astype(self.dtype)
        b_ih = param(self, "bias_ih", init, (3 * hdim,), (GATES,), self.param_dtype)
        b_hh = param(self, "bias_hh", init, (3 * hdim,), (GATES,), self.param_dtype)
        b_ih, b_hh = b_ih.astype(self.dtype), b_hh.astype(self.dtype)

        # The input projection has no recurrence: one matmul for all steps, time-major.
        gx = jnp.einsum("bti,gi->tbg", x.astype(self.dtype), w_ih) + b_ih
        if lengths is None:
            valid = jnp.ones((steps, batch, 1), bool)
        else:
            lengths = jnp.asarray(lengths)
            if lengths.shape != (batch,):
                raise ValueError(f"GRU: lengths must have shape ({batch},), got {lengths.shape}")
            valid = (jnp.arange(steps)[:, None] < lengths[None, :])[..., None]

        def body(h, inputs):
            g, ok = inputs
            return jnp.where(ok, gru_cell(h, g, w_hh, b_hh), h), None

        h0 = jnp.zeros((batch, hdim), self.dtype)
        h, _ = jax.lax.scan(body, h0, (gx, valid))
        return h
