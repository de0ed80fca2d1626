"""HiFT signal processing without weights: harmonic phase, noise, STFT / iSTFT (model.md §14).

**Phase accumulation.** The official sine source takes an inclusive float32 `cumsum` over
all 256*T samples of inc = (f0_up * k) / 22050; PyTorch accumulates it in float64 and rounds
each partial sum to float32 (golden README §2). JAX runs without x64, and a float32 running
sum drifts by up to half a cycle. Because f0_up is constant within each 256-sample frame,
the exact sum at sample n = 256 f + j is

    S(n) = O_f + (j + 1) * inc_f,   O_f = sum_{f' < f} 256 * inc_f'

and it is computed here in double-float arithmetic (pairs hi + lo of float32, error-free
TwoSum): the frame offsets O_f by an associative scan over frames, the products
(j + 1) * inc_f exactly by splitting inc_f into two 12-bit halves. The rounded hi part is
fl32(S(n)), i.e. what the official code feeds to `% 1`, except at exact rounding ties
(the offsets carry ~48 bits). This works under `jit`; tests compare it with a float64
numpy cumsum.

**Randomness.** phi [B, 9] (phi_1 = 0, phi_k ~ U(-pi, pi)) and noise ~ N(0, 1) per sample
and harmonic come from an explicit key. Noise is drawn in fixed blocks of absolute sample
positions (`fold_in(key, block index)`), so a chunk of a long input sees exactly the noise
the whole utterance would see at the same samples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.hift import HiFTConfig

NOISE_BLOCK = 4096  # samples per noise block (fold_in index = absolute sample // NOISE_BLOCK)
_HIGHEST = jax.lax.Precision.HIGHEST


# ---- double-float arithmetic (pairs of float32, error-free transformations) -------------

def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


def df_add(a: tuple, b: tuple) -> tuple:
    """(hi, lo) + (hi, lo) -> normalised (hi, lo); about 48 significant bits."""
    s, e = _two_sum(a[0], b[0])
    return _fast_two_sum(s, e + (a[1] + b[1]))


def _split12(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x = hi + lo exactly, each with at most 12 significant bits (bit mask, not Veltkamp,
    so no compiler simplification can undo it)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFF000)
    hi = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return hi, x - hi


# ---- phase --------------------------------------------------------------------------------

def phase_increments(f0: jax.Array, cfg: HiFTConfig) -> jax.Array:
    """f0 [B, T] Hz -> inc [B, T, K] = (f0 * k) / sr in float32, k = 1..K (official order)."""
    k = jnp.arange(1, cfg.num_sines + 1, dtype=jnp.float32)
    num = f0[..., None] * k
    # XLA rewrites x / broadcast(c) as x * (1/c), which is not correctly rounded (1 in 60
    # values differ by an ulp, and the phase sum amplifies that); a full-shaped divisor
    # behind an optimisation barrier keeps a true IEEE division.
    den = jax.lax.optimization_barrier(jnp.full(num.shape, cfg.sampling_rate, jnp.float32))
    return num / den


def frame_offsets(inc: jax.Array, hop: int, start=None) -> tuple[jax.Array, jax.Array]:
    """Exclusive per-frame phase offsets O_f (+ start) as double-float.

    inc [B, T, K]; start: None or (hi, lo) [B, K] (the offset of frame 0, for chunks).
    Returns (hi, lo) [B, T, K].
    """
    step = inc * jnp.float32(hop)  # exact: hop is a power of two
    hi, lo = jax.lax.associative_scan(df_add, (step, jnp.zeros_like(step)), axis=1)
    hi = jnp.pad(hi, ((0, 0), (1, 0), (0, 0)))[:, :-1]  # exclusive prefix
    lo = jnp.pad(lo, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    if start is not None:
        hi, lo = df_add((hi, lo), (start[0][:, None], start[1][:, None]))
    return hi, lo


def end_offset(inc: jax.Array, hop: int, start=None) -> tuple[jax.Array, jax.Array]:
    """Offset after the last frame, (hi, lo) [B, K]: the `start` of a following chunk."""
    o_hi, o_lo = frame_offsets(inc, hop, start)
    last = (inc[:, -1] * jnp.float32(hop), jnp.zeros_like(inc[:, -1]))
    return df_add((o_hi[:, -1], o_lo[:, -1]), last)


def phase_fraction(inc: jax.Array, hop: int, start=None) -> jax.Array:
    """frac(fl32(S(n))) [B, T*hop, K]: the official `cumsum(...) % 1`, exactly (see module doc)."""
    b, t, k = inc.shape
    o_hi, o_lo = frame_offsets(inc, hop, start)
    m = jnp.arange(1, hop + 1, dtype=jnp.float32)[None, None, :, None]  # j + 1
    i_hi, i_lo = _split12(inc)
    p1 = m * i_hi[:, :, None]  # exact: 9 + 12 bits
    p2 = m * i_lo[:, :, None]  # exact
    s = df_add((o_hi[:, :, None], o_lo[:, :, None]), _fast_two_sum(p1, p2))
    hi = s[0].reshape(b, t * hop, k)
    return hi - jnp.floor(hi)  # torch `% 1` on a non-negative float32 (exact)


def phase_fraction_f64(f0: np.ndarray, cfg: HiFTConfig) -> np.ndarray:
    """Host oracle: float64 cumsum cast to float32 then % 1, as PyTorch does. [B, 256T, K]."""
    k = np.arange(1, cfg.num_sines + 1, dtype=np.float32)
    inc = (np.asarray(f0, np.float32)[..., None] * k) / np.float32(cfg.sampling_rate)
    inc = np.repeat(inc, cfg.hop_length, axis=1)
    s = np.cumsum(inc.astype(np.float64), axis=1).astype(np.float32)
    return np.mod(s, np.float32(1.0))


# ---- randomness ---------------------------------------------------------------------------

def random_phases(key: jax.Array, batch: int, num_sines: int) -> jax.Array:
    """phi [B, K]: 0 for the fundamental, U(-pi, pi) for the harmonics."""
    phi = jax.random.uniform(key, (batch, num_sines), jnp.float32, -math.pi, math.pi)
    return phi.at[:, 0].set(0.0)


def block_noise(key: jax.Array, batch: int, start, length: int, channels: int) -> jax.Array:
    """N(0, 1) noise [B, length, C] for absolute samples [start, start + length).

    `start` may be traced; `length` is static. Equal (key, absolute sample) -> equal value,
    whatever the chunking.
    """
    nblocks = length // NOISE_BLOCK + 2
    first = start // NOISE_BLOCK
    ids = first + jnp.arange(nblocks)
    # lax.map, not vmap: a batched threefry takes ~5x longer to compile on CPU.
    z = jax.lax.map(lambda i: jax.random.normal(jax.random.fold_in(key, i),
                                                (batch, NOISE_BLOCK, channels)), ids)
    z = jnp.moveaxis(z, 0, 1).reshape(batch, nblocks * NOISE_BLOCK, channels)
    return jax.lax.dynamic_slice_in_dim(z, start - first * NOISE_BLOCK, length, axis=1)


# ---- STFT / iSTFT (n_fft 16, hop 4, periodic Hann, centred) -------------------------------

def hann(n: int) -> np.ndarray:
    """Periodic Hann (scipy get_window("hann", n, fftbins=True))."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def _dft_bases(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward [n_fft, 2 bins] (Re | Im, e^{-i w n}) and inverse [2 bins, n_fft] (irfft)."""
    bins = n_fft // 2 + 1
    ang = 2 * np.pi * np.outer(np.arange(n_fft), np.arange(bins)) / n_fft  # [n, k]
    fwd = np.concatenate([np.cos(ang), -np.sin(ang)], axis=1)
    c = np.full(bins, 2.0)
    c[0] = c[-1] = 1.0  # DC and Nyquist once; their imaginary parts are ignored (C2R)
    inv = np.concatenate([c[:, None] * np.cos(ang.T), -c[:, None] * np.sin(ang.T)], 0) / n_fft
    return fwd.astype(np.float32), inv.astype(np.float32)


def stft(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Centred STFT with reflect padding n_fft/2: x [B, N] -> [B, N/hop + 1, Re bins | Im bins]."""
    b, n = x.shape
    half = n_fft // 2
    xp = jnp.pad(x, ((0, 0), (half, half)), mode="reflect")
    rows = xp.reshape(b, (n + 2 * half) // hop, hop)
    nframes = n // hop + 1
    frames = jnp.concatenate([rows[:, i:i + nframes] for i in range(n_fft // hop)], axis=-1)
    fwd, _ = _dft_bases(n_fft)
    return jnp.matmul(frames * hann(n_fft), fwd, precision=_HIGHEST)


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[B, F, n_fft] -> [B, hop (F - 1) + n_fft] (n_fft a multiple of hop)."""
    b, f, n_fft = frames.shape
    r = n_fft // hop
    parts = frames.reshape(b, f, r, hop)
    out = sum(jnp.pad(parts[:, :, s], ((0, 0), (s, r - 1 - s), (0, 0))) for s in range(r))
    return out.reshape(b, (f + r - 1) * hop)


def istft(spec: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """torch.istft(center=True) of spec [B, F, Re bins | Im bins] -> [B, hop * (F - 1)].

    irfft per frame, window, overlap-add, divide by the overlap-added squared window
    (not a constant near the ends), drop n_fft/2 samples at each end.
    """
    _, inv = _dft_bases(n_fft)
    w = hann(n_fft)
    frames = jnp.matmul(spec, inv, precision=_HIGHEST) * w
    y = _overlap_add(frames, hop)
    env = _overlap_add(jnp.broadcast_to(jnp.asarray(w * w), (1,) + frames.shape[1:]), hop)
    half = n_fft // 2
    return (y / env)[:, half:y.shape[1] - half]
