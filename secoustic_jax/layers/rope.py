"""Rotary position embedding, interleaved "GPT-J" layout (model.md §5).

Each head vector of width Dh is Dh/2 pairs (x[2i], x[2i+1]); pair i is rotated by the
angle p * omega_i with omega_i = exp(i * (-ln(max_period) * 2 / Dh)). This is NOT the
NeoX "rotate-half" layout (which pairs x[i] with x[i + Dh/2]).

Bit-level parity with the official (moshi) code needs the same float32 arithmetic:
omega is exp() of a float32 product, the angle a float32 product of float32 positions.
Positions are absolute, so streaming passes `counter + index in chunk`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from secoustic_jax.ops import rotate


def rope_frequencies(head_dim: int, max_period: float = 10000.0) -> np.ndarray:
    """omega_i, i = 0 .. head_dim/2 - 1, float32 [head_dim // 2] (a host constant).

    The scalar -ln(max_period) * 2 / head_dim is formed in Python double and rounded to
    float32 once, and multiplied by i in float32, exactly as torch does. The exp is then
    taken in float64 and rounded (correctly rounded float32 exp): the same bits on every
    backend, whereas float32 exp implementations (XLA CPU/GPU, torch's SIMD exp) each
    differ from it by 1 ulp at a few indices.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    arg = np.arange(head_dim // 2, dtype=np.float32) * np.float32(-math.log(max_period) * 2.0 / head_dim)
    return np.exp(arg.astype(np.float64)).astype(np.float32)


def rope_tables(positions, head_dim: int, max_period: float = 10000.0):
    """cos and sin of the rotation angles p * omega_i: positions [T] or [B, T] integers ->
    two float32 [B or 1, T, head_dim / 2] (what `rotate` and `ops.window_attention` take)."""
    positions = jnp.asarray(positions)
    if positions.ndim not in (1, 2):
        raise ValueError(f"positions must be [T] or [B, T], got {positions.shape}")
    if positions.ndim == 1:
        positions = positions[None]
    # float32 positions: exact up to 2**24 tokens (about 54 hours at 86 Hz).
    angle = positions.astype(jnp.float32)[:, :, None] * rope_frequencies(head_dim, max_period)
    return jnp.cos(angle), jnp.sin(angle)


def apply_rope(x: jnp.ndarray, positions, max_period: float = 10000.0) -> jnp.ndarray:
    """Rotates the pairs (x[2i], x[2i+1]) of every head by p * omega_i.

    Args:
      x: [B, T, H, Dh] queries or keys, any float dtype.
      positions: absolute integer positions, [T] (shared by the batch) or [B, T].
      max_period: the RoPE base (10 000).
    Returns:
      [B, T, H, Dh] in x.dtype; the rotation itself is computed in float32.
    """
    if x.ndim != 4:
        raise ValueError(f"apply_rope expects x of shape [B, T, H, Dh], got {x.shape}")
    positions = jnp.asarray(positions)
    if positions.ndim not in (1, 2) or positions.shape[-1] != x.shape[1]:
        raise ValueError(f"positions must be [T] or [B, T] with T={x.shape[1]}, got {positions.shape}")
    return rotate(x, *rope_tables(positions, x.shape[-1], max_period))
