"""The backend seam: every op the network runs that a platform may do its own way.

`layers/` and `model/` call these and nothing below them. Each op is the plain-XLA
reference of `ops/reference.py` (native autodiff), except where `ops/backend.py` turns
the CPU variants of `ops/cpu.py` on (setting "auto" on a CPU host). Shapes and values are
the reference's; the CPU variants match them up to float summation order.
"""

from __future__ import annotations

import jax.numpy as jnp

from secoustic_jax.ops import backend, cpu
from secoustic_jax.ops import reference as ref
from secoustic_jax.ops.reference import (BF16_BITS, DIMENSION_NUMBERS, attend, banded_attention,
                                         dense_attention, rotate, window_mask)

__all__ = ["BF16_BITS", "DIMENSION_NUMBERS", "attend", "attend_ring", "backend",
           "banded_attention", "conv1d_bf16", "conv1d_valid", "dense_attention",
           "has_bf16_conv", "narrow_matvec", "ring_dtype", "ring_write", "rotate",
           "window_attention", "window_mask"]


def window_attention(qkv, cos, sin, context: int, block: int | None):
    """qkv [B, T, 3, H, Dh] (unrotated in_proj rows), cos, sin [B or 1, T, Dh/2] ->
    [B, T, H, Dh]; `block` None = dense attention (short inputs), else banded with query
    blocks of `block`. CPU variant: the fused kernel, for float32 rows, where the library
    was built with its AVX-512 path (the scalar fallback is slower than the reference)."""
    def reference(*a):
        return ref.window_attention(*a, context, block)

    # The kernel only where it is faster: float32 rows, and a build with its vector path.
    if (qkv.dtype != jnp.float32 or not backend.cpu_variants()
            or not cpu.has_window_kernel()):
        return reference(qkv, cos, sin)
    return backend.dispatch(qkv, cos, sin, reference=reference,
                            cpu=lambda *a: cpu.window_attention(*a, context, block))


def attend_ring(q, keys, values, mask, scale: float):
    """q [B, H, c, Dh] over a ring keys, values [B, H, C, Dh] (as `ring_dtype` stores
    them); mask broadcastable to [B, H, c, C] -> [B, H, c, Dh]. CPU variant: float32
    queries over a bf16 ring read by custom calls."""
    def reference(q, keys, values, mask):
        return ref.attend_ring(q, keys, values, mask, scale)

    if keys.dtype != BF16_BITS or q.dtype != jnp.float32:
        return reference(q, keys, values, mask)
    mask = jnp.broadcast_to(mask, q.shape[:3] + keys.shape[2:3])
    return backend.dispatch(q, keys, values, mask, reference=reference,
                            cpu=lambda *a: cpu.attend_ring(*a, scale))


def ring_dtype(dtype):
    """The dtype a KV ring of `dtype` values is stored in (CPU: bf16 as uint16 bits)."""
    return backend.pick(cpu.ring_dtype, ref.ring_dtype)(dtype)


def ring_write(keys, values, positions, slots, k, v, pos):
    """Writes a chunk into a KV ring: keys, values [B, H, C, Dh], positions [B, C],
    slots [c] (shared by the batch), k, v [B, H, c, Dh], pos [B, c] ->
    (keys, values, positions)."""
    return backend.pick(cpu.ring_write, ref.ring_write)(keys, values, positions, slots, k, v, pos)


def conv1d_valid(x, w, stride: int = 1, dilation: int = 1):
    """VALID conv: x [B, L, C_in], w [K, C_in, C_out] -> [B, (L - k_eff) // stride + 1,
    C_out]. CPU variant: per-tap matmul gradients and an im2col forward for 1-4 outputs."""
    return backend.pick(cpu.conv1d_valid, ref.conv1d_valid)(x, w, stride, dilation)


def conv1d_bf16(x, w, b, dilation: int, pad: int):
    """x f32[B, T, Cin], w f32[K, Cin, Cout], b [Cout] -> f32[B, T + 2 pad - d (K-1), Cout]
    with bf16-rounded x and w and float32 accumulation. CPU variant: VDPBF16PS kernel
    (Cout % 64 == 0, Cin even)."""
    return backend.dispatch(x, w, b, reference=lambda *a: ref.conv1d_bf16(*a, dilation, pad),
                            cpu=lambda *a: cpu.conv1d_bf16(*a, dilation, pad))


def has_bf16_conv() -> bool:
    """Whether `conv1d_bf16` can run here: always off CPU; on CPU the kernel needs
    AVX512_BF16."""
    return not backend.cpu_variants() or cpu.has_bf16_conv()


def narrow_matvec(x, kernel, scale=None):
    """x f32[..., K] @ a bf16 or int8 kernel [K, N] (int8: times scale f32[N]) -> f32[..., N],
    float32 accumulation. CPU variant: weights widened in registers by custom calls."""
    operands = (x.astype(jnp.float32), kernel) + (() if scale is None else (scale,))
    return backend.dispatch(*operands, reference=ref.narrow_matvec, cpu=cpu.narrow_matvec)
