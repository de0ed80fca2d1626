"""Finite scalar quantisation, lucidrains/FSQ-paper style (model.md §7).

Pure functions (no parameters) do the bound, rounding and code <-> index arithmetic; the
`FSQ` module adds `project_in` (Dense d -> len(levels)) and `project_out` (Dense
len(levels) -> d), both with bias and PyTorch-default init.

Index convention (bit-exact with the official code): digit_i = round(bound(u_i)) +
floor(L_i / 2) in 0..L_i-1; index = sum_i digit_i * basis_i with basis = cumprod([1] +
levels[:-1]), i.e. **dimension 0 is the least significant digit**. For levels (3,)*8 the
zero code is 3280, all -1 is 0 and all +1 is 6560.

Everything here runs in float32 (indices int32), whatever the input dtype: bf16 cannot
resolve values near the rounding thresholds (|u| = atanh(0.5/0.999) ~ 0.55 for L = 3).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.model import FSQConfig
from secoustic_jax.layers.common import CODE, EMBED, torch_dense

_EPS = 1e-3  # the bound's shrink factor (1 - eps) keeps tanh away from half-integers


def _consts(levels: Sequence[int]):
    """Host constants: levels, half widths floor(L/2), and the int32 basis (dim 0 first)."""
    lv = np.asarray(levels, np.int64)
    if lv.ndim != 1 or lv.size == 0 or np.any(lv < 2):
        raise ValueError(f"FSQ levels must be a non-empty list of ints >= 2, got {levels}")
    if math.prod(levels) > np.iinfo(np.int32).max:
        raise ValueError(f"FSQ codebook of {math.prod(levels)} codes does not fit int32")
    basis = np.cumprod(np.concatenate([[1], lv[:-1]]))
    return lv.astype(np.int32), (lv // 2).astype(np.int32), basis.astype(np.int32)


def bound(u: jax.Array, levels: Sequence[int]) -> jax.Array:
    """b(u) = tanh(u + shift) * half_l - offset, float32. u [..., D] -> [..., D].

    half_l = (L - 1)(1 - 1e-3)/2, offset = 0.5 for even L (else 0), shift = tan(offset/half_l).
    For L = 3 this is 0.999 * tanh(u).
    """
    lv, _, _ = _consts(levels)
    half_l = (lv.astype(np.float64) - 1) * (1 - _EPS) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.tan(offset / half_l)
    u = jnp.asarray(u).astype(jnp.float32)
    return (jnp.tanh(u + shift.astype(np.float32)) * half_l.astype(np.float32)
            - offset.astype(np.float32))


def round_ste(x: jax.Array) -> jax.Array:
    """round-half-to-even with a straight-through (identity) gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def quantize(u: jax.Array, levels: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """u [..., D] -> (codes [..., D] float32 with STE gradient, indices [...] int32).

    codes = round(bound(u)) / floor(L/2); indices come from the rounded values by integer
    arithmetic, never from float sums.
    """
    _, half_width, basis = _consts(levels)
    b = bound(u, levels)
    rounded = round_ste(b)
    codes = rounded / half_width.astype(np.float32)
    digits = jax.lax.stop_gradient(rounded).astype(jnp.int32) + half_width
    return codes, jnp.sum(digits * basis, axis=-1, dtype=jnp.int32)


def codes_to_indices(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
    """codes [..., D] (values k / floor(L/2)) -> indices [...] int32, dim 0 least significant."""
    _, half_width, basis = _consts(levels)
    scaled = jnp.round(jnp.asarray(codes, jnp.float32) * half_width.astype(np.float32))
    digits = scaled.astype(jnp.int32) + half_width
    return jnp.sum(digits * basis, axis=-1, dtype=jnp.int32)


def indices_to_codes(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
    """indices [...] int (0 <= idx < prod(levels)) -> codes [..., D] float32.

    digit_i = floor(idx / basis_i) mod L_i; code_i = (digit_i - floor(L_i/2)) / floor(L_i/2).
    Out-of-range indices are not checked here (traced values); they wrap modulo the levels.
    """
    lv, half_width, basis = _consts(levels)
    idx = jnp.asarray(indices).astype(jnp.int32)[..., None]
    digits = (idx // basis) % lv
    return (digits - half_width).astype(jnp.float32) / half_width.astype(np.float32)


def implicit_codebook(levels: Sequence[int]) -> jax.Array:
    """All codes in index order: [prod(levels), D] float32 (the official non-persistent buffer)."""
    return indices_to_codes(jnp.arange(math.prod(levels)), levels)


class FSQOutput(NamedTuple):
    """FSQ forward results. projected [..., D]; codes [..., D] (STE); indices [...] int32;
    embedding = project_out(codes) [..., dim]."""

    projected: jax.Array
    codes: jax.Array
    indices: jax.Array
    embedding: jax.Array


class FSQ(nn.Module):
    """project_in (Dense dim -> D), bound/round/index, project_out (Dense D -> dim).

    project_in always computes in float32 (the bound needs it); project_out computes in
    `dtype` (its output feeds the connector).
    """

    cfg: FSQConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        d, n = self.cfg.dim, len(self.cfg.levels)
        self.project_in = torch_dense(n, d, (EMBED, CODE), "project_in", dtype=jnp.float32,
                                      param_dtype=self.param_dtype)
        self.project_out = torch_dense(d, n, (CODE, EMBED), "project_out", dtype=self.dtype,
                                       param_dtype=self.param_dtype)

    def project(self, mu: jax.Array) -> jax.Array:
        """mu [..., dim] -> u [..., D] float32."""
        return self.project_in(jnp.asarray(mu).astype(jnp.float32))

    def quantize(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        """u [..., D] -> (codes_ste [..., D] float32, indices [...] int32)."""
        return quantize(u, self.cfg.levels)

    def codes_to_indices(self, codes: jax.Array) -> jax.Array:
        return codes_to_indices(codes, self.cfg.levels)

    def indices_to_codes(self, indices: jax.Array) -> jax.Array:
        return indices_to_codes(indices, self.cfg.levels)

    def embed_codes(self, codes: jax.Array) -> jax.Array:
        """codes [..., D] -> project_out(codes) [..., dim]."""
        return self.project_out(codes)

    def decode(self, indices: jax.Array) -> jax.Array:
        """indices [...] int -> S = project_out(codes) [..., dim]."""
        return self.project_out(self.indices_to_codes(indices))

    def __call__(self, mu: jax.Array) -> FSQOutput:
        """mu [..., dim] -> FSQOutput (touches both Dense layers, so it is also the init path)."""
        u = self.project(mu)
        codes, indices = self.quantize(u)
        return FSQOutput(u, codes, indices, self.project_out(codes))
