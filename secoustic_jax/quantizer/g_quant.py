"""Quantised transmission of the paralinguistic vector G (host-side numpy).

Decoding needs G beside the tokens: 512 float32 values are 16 384 bits per utterance, more
than 10 s of 21.5 Hz tokens (evaluation.md §4.8). `quantize_g` stores G with one float16
scale per vector and k-bit symmetric scalar levels (k in G_BITS; 32 = float32 as is):

    scale = max|g| (as float16, rounded up so that |g| / scale <= 1)
    q     = round(g / scale * L),  L = 2^(k-1) - 1,  q in [-L, L]   (int8 / int16)
    g'    = q / L * scale

The error per element is at most scale / (2L). Bits per utterance: d * k + 16.
"""

from __future__ import annotations

import numpy as np

G_BITS = (32, 8, 6, 4)
SCALE_BITS = 16


def levels(bits: int) -> int:
    """L = 2^(bits-1) - 1 (127, 31, 7 for 8, 6, 4 bits)."""
    if bits not in G_BITS or bits == 32:
        raise ValueError(f"G precision must be one of {G_BITS[1:]} bits to quantise, got {bits}")
    return (1 << (bits - 1)) - 1


def bits_per_vector(dim: int, bits: int) -> int:
    """Bits that one G of `dim` values costs at `bits` precision (32: float32)."""
    if bits not in G_BITS:
        raise ValueError(f"G precision must be one of {G_BITS}, got {bits}")
    return dim * 32 if bits == 32 else dim * bits + SCALE_BITS


def quantize_g(g, bits: int) -> tuple[np.ndarray, np.float16]:
    """g [..., d] float -> (codes [..., d] int8, scale [...] float16)."""
    g = np.asarray(g, np.float32)
    if not np.isfinite(g).all():
        raise ValueError("G contains NaN/Inf values")
    lv = levels(bits)
    peak = np.abs(g).max(axis=-1)
    scale = peak.astype(np.float16)
    # float16 rounding may land below the peak: step up so that no code exceeds L.
    low = scale.astype(np.float32) < peak
    scale = np.where(low, np.nextafter(scale, np.float16(np.inf)), scale).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)[..., None]
    codes = np.clip(np.rint(g / safe * lv), -lv, lv).astype(np.int8)
    return codes, scale


def dequantize_g(codes, scale, bits: int) -> np.ndarray:
    """(codes [..., d] int, scale [...] float16) -> g' [..., d] float32."""
    codes = np.asarray(codes)
    lv = levels(bits)
    if not np.issubdtype(codes.dtype, np.integer) or np.abs(codes.astype(np.int64)).max(initial=0) > lv:
        raise ValueError(f"G codes must be integers in [-{lv}, {lv}] for {bits} bits")
    scale = np.asarray(scale, np.float16).astype(np.float32)
    if not np.isfinite(scale).all() or (scale < 0).any():
        raise ValueError("G scale must be finite and >= 0")
    return (codes.astype(np.float32) / lv * scale[..., None]).astype(np.float32)


def roundtrip_g(g, bits: int) -> np.ndarray:
    """G as the decoder receives it at `bits` precision (32: unchanged float32)."""
    if bits == 32:
        return np.asarray(g, np.float32)
    return dequantize_g(*quantize_g(g, bits), bits)
