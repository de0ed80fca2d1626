"""The CosyVoice-1 HiFT log-mel front end (model.md §2), batched and jit-able.

wav [B, N] or [N] float, 22.05 kHz -> log-mel [B, T, 80] (or [T, 80]), T = floor(N / 256):
reflect pad 384 each side, frames of 1024 with hop 256 (no centring), periodic Hann window,
one-sided rFFT (513 bins), sqrt(|X|^2 + 1e-9), Slaney mel basis [80, 513], ln(max(., 1e-5)).

The mel basis and window are host-side numpy constants (built once, cached per config).
`log_mel` validates shapes and, for concrete inputs, NaN/Inf; under `jax.jit` only the
static shape checks run (values are tracers).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.model import MelConfig


@functools.lru_cache(maxsize=8)
def _mel_basis_cached(cfg: MelConfig) -> np.ndarray:
    import librosa  # optional: librosa (heavy; host only, keeps this import cheap)

    cfg.validate()
    basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                fmin=cfg.fmin, fmax=cfg.fmax)
    basis = np.asarray(basis, dtype=np.float32)
    basis.setflags(write=False)
    return basis


def mel_basis(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Slaney mel filterbank, float32 [n_mels, n_fft // 2 + 1] = [80, 513] (read-only, cached)."""
    return _mel_basis_cached(cfg)


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int = 1024) -> np.ndarray:
    """Periodic Hann window [n_fft]: w[n] = 0.5 - 0.5 cos(2 pi n / n_fft), float32."""
    n = np.arange(n_fft, dtype=np.float64)
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)
    w.setflags(write=False)
    return w


def num_frames(num_samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Mel frames produced from `num_samples` samples: floor(N / hop)."""
    return int(num_samples) // cfg.hop_length


def min_samples(cfg: MelConfig = MelConfig()) -> int:
    """Shortest input the front end accepts: reflect padding of `pad` needs N >= pad + 1 (385)."""
    return cfg.pad + 1


def _check_input(wav, cfg: MelConfig) -> None:
    """Raises ValueError for bad rank, empty or too-short input, and (if concrete) NaN/Inf."""
    if wav.ndim not in (1, 2):
        raise ValueError(f"log_mel: expected wav of shape [N] or [B, N], got shape {wav.shape}")
    n = wav.shape[-1]
    if n == 0 or (wav.ndim == 2 and wav.shape[0] == 0):
        raise ValueError(f"log_mel: empty input (shape {wav.shape})")
    if n < min_samples(cfg):
        raise ValueError(
            f"log_mel: input has {n} samples; reflect padding of {cfg.pad} needs at least "
            f"{min_samples(cfg)} samples")
    if not jnp.issubdtype(wav.dtype, jnp.floating):
        raise ValueError(f"log_mel: expected a floating waveform, got dtype {wav.dtype}")
    if not isinstance(wav, jax.core.Tracer):
        finite = np.isfinite(np.asarray(wav))
        if not finite.all():
            bad = np.argwhere(~finite)[0].tolist()
            raise ValueError(f"log_mel: waveform contains NaN/Inf (first at index {bad})")


def _frames(padded: jax.Array, n_frames: int, cfg: MelConfig) -> jax.Array:
    """[B, N + 2 pad] -> [B, T, n_fft] overlapping frames via a gather (static indices)."""
    idx = (np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :])
    return padded[:, idx]


def _log_mel_impl(wav: jax.Array, cfg: MelConfig) -> jax.Array:
    """wav [B, N] float32 -> [B, T, n_mels]; shapes already validated."""
    wav = wav.astype(jnp.float32)
    padded = jnp.pad(wav, ((0, 0), (cfg.pad, cfg.pad)), mode="reflect")
    return _log_mel_padded(padded, num_frames(wav.shape[-1], cfg), cfg)


def log_mel_windows(windows: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
    """Log-mel of waveform windows already cut with `frame_window` (no padding here).

    windows [B, F * hop + 2 pad] float (e.g. int16 / 32768) -> [B, F, n_mels] float32:
    frame f of window b is frame start_b + f of the utterance's `log_mel`. Jit-able (the
    on-device front end of pipeline.features = "waveform")."""
    extra = windows.shape[-1] - 2 * cfg.pad
    if windows.ndim != 2 or extra <= 0 or extra % cfg.hop_length:
        raise ValueError(f"log_mel_windows: expected [B, F * {cfg.hop_length} + {2 * cfg.pad}] "
                         f"windows, got shape {windows.shape}")
    return _log_mel_padded(windows.astype(jnp.float32), extra // cfg.hop_length, cfg)


def frame_window(wav: np.ndarray, start: int, frames: int, cfg: MelConfig = MelConfig()
                 ) -> np.ndarray:
    """The samples mel frames [start, start + frames) of `log_mel(wav)` read (host, numpy).

    wav [N] (any dtype) -> [frames * hop + 2 pad], same dtype: samples start*hop - pad ...
    (start + frames)*hop + pad of the reflect-padded utterance; zeros past its end (frames
    beyond T = floor(N / hop), which a crop masks). Reflect-pads only near the edges."""
    n, hop, pad = wav.shape[0], cfg.hop_length, cfg.pad
    lo, hi = start * hop - pad, (start + frames) * hop + pad
    out = np.zeros(hi - lo, wav.dtype)
    a, b = max(lo, -pad), min(hi, n + pad)  # the reflect-padded signal spans [-pad, n + pad)
    if a < b:
        if a >= 0 and b <= n:
            out[a - lo:b - lo] = wav[a:b]
        else:
            out[a - lo:b - lo] = np.pad(wav, pad, mode="reflect")[a + pad:b + pad]
    return out


def _log_mel_padded(padded: jax.Array, n_frames: int, cfg: MelConfig) -> jax.Array:
    """[B, (n_frames - 1) * hop + n_fft] float32 -> [B, n_frames, n_mels]."""
    frames = _frames(padded, n_frames, cfg) * jnp.asarray(hann_window(cfg.n_fft))
    spec = jnp.fft.rfft(frames, n=cfg.n_fft, axis=-1)  # [B, T, 513] complex64
    mag = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + cfg.mag_eps)
    # [B, T, 513] @ [513, 80]; HIGHEST keeps the matmul in full float32 on TPU/GPU too.
    mel = jnp.matmul(mag, jnp.asarray(mel_basis(cfg)).T, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, cfg.log_floor))


def log_mel(wav, cfg: MelConfig = MelConfig()) -> jax.Array:
    """Log-mel of a waveform at `cfg.sample_rate`.

    Args:
      wav: float [N] or [B, N], nominally in [-1, 1] (values beyond are not clipped).
      cfg: front-end settings (static).
    Returns:
      float32 [T, n_mels] for [N] input, [B, T, n_mels] for [B, N], T = floor(N / hop).
    Raises:
      ValueError: rank not 1/2, empty input, N < pad + 1 (385), non-float dtype, NaN/Inf.
    """
    if not isinstance(wav, jax.Array):
        wav = np.asarray(wav)
        if wav.dtype == np.float64:
            wav = wav.astype(np.float32)
    _check_input(wav, cfg)
    if wav.ndim == 1:
        return _log_mel_jit(wav[None, :], cfg)[0]
    return _log_mel_jit(wav, cfg)


_log_mel_jit = jax.jit(_log_mel_impl, static_argnums=1)


def log_mel_numpy(wav: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Float64 numpy reference of the same front end: [N] or [B, N] -> [(B,) T, n_mels].

    Used by tests and as a host fallback; the window and mel basis are the float32 constants
    promoted to float64 (as the official front end stores them in float32).
    """
    x = np.asarray(wav, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    _check_input(x, cfg)
    padded = np.pad(x, ((0, 0), (cfg.pad, cfg.pad)), mode="reflect")
    t = num_frames(x.shape[-1], cfg)
    frames = _frames(padded, t, cfg) * hann_window(cfg.n_fft).astype(np.float64)
    spec = np.fft.rfft(frames, n=cfg.n_fft, axis=-1)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + cfg.mag_eps)
    mel = mag @ mel_basis(cfg).astype(np.float64).T
    out = np.log(np.maximum(mel, cfg.log_floor))
    return out[0] if squeeze else out
