"""Frequency warping of log-mel spectrograms: a training-time speaker perturbation.

Scaling every frequency of a voice by alpha moves its harmonics (pitch) and its formants
(vocal-tract length) together, as vocal-tract length perturbation (VTLP) does: to a
listener, another voice saying the same words. `warp_log_mel` does it on the log-mel
itself, by resampling each frame along the frequency axis: output bin k reads the input at
the (fractional) bin whose centre frequency is f_k / alpha, linearly interpolated between
the two neighbouring bins; frequencies beyond the filterbank's range read its edge bins.
The mel scale is librosa's Slaney scale, the one the front end's filterbank uses
(audio/mel.py), so alpha = 1 is the identity.

Used by `augment.semantic_warp` (config/train.py): the semantic branch reads a warped mel
while the acoustic target and the prompt keep the original, so the tokens' input no longer
tells the speaker and the connector must take the voice from G.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.model import MelConfig

# librosa's Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _HZ_PER_MEL  # 15
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(f):
    """Hz -> Slaney mel (librosa.hz_to_mel(htk=False)); numpy or jax arrays, elementwise."""
    xp = jnp if isinstance(f, jax.Array) else np
    lin = f / _HZ_PER_MEL
    log = _BREAK_MEL + xp.log(xp.maximum(f, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return xp.where(f >= _BREAK_HZ, log, lin)


def mel_to_hz(m):
    """Slaney mel -> Hz (librosa.mel_to_hz(htk=False)); numpy, elementwise."""
    m = np.asarray(m, np.float64)
    return np.where(m >= _BREAK_MEL, _BREAK_HZ * np.exp(_LOG_STEP * (m - _BREAK_MEL)),
                    _HZ_PER_MEL * m)


def _mel_range(cfg: MelConfig) -> tuple[float, float]:
    """The filterbank's ends on the Slaney mel axis: (mel(fmin), mel(fmax))."""
    return hz_to_mel(np.float64(cfg.fmin)), hz_to_mel(np.float64(cfg.fmax))


def centre_frequencies(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Centre frequency (Hz) of each mel filter [n_mels]: n_mels + 2 points equally spaced on
    the mel scale from fmin to fmax, without the two ends (librosa.filters.mel)."""
    lo, hi = _mel_range(cfg)
    return mel_to_hz(np.linspace(lo, hi, cfg.n_mels + 2)[1:-1])


def warp_log_mel(mel: jax.Array, alpha: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
    """mel [B, T, n_mels] log-mel, alpha [B] > 0 -> [B, T, n_mels] float32: each item's
    frequencies scaled by its alpha (alpha > 1 raises the voice). Jit-able."""
    if mel.ndim != 3 or mel.shape[-1] != cfg.n_mels:
        raise ValueError(f"warp_log_mel: expected mel [B, T, {cfg.n_mels}], got {mel.shape}")
    if alpha.shape != mel.shape[:1]:
        raise ValueError(f"warp_log_mel: alpha must be [B] = {mel.shape[:1]}, got {alpha.shape}")
    n = cfg.n_mels
    lo, hi = _mel_range(cfg)
    step = (hi - lo) / (n + 1)
    src_hz = jnp.asarray(centre_frequencies(cfg), jnp.float32)[None, :] / alpha[:, None]
    # Fractional input bin of each output bin (bin k is centred at mel lo + (k + 1) step).
    pos = jnp.clip((hz_to_mel(src_hz) - lo) / step - 1.0, 0.0, n - 1.0)  # [B, n]
    left = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 2)
    frac = (pos - left)[:, None, :]
    mel = mel.astype(jnp.float32)
    take = lambda idx: jnp.take_along_axis(mel, jnp.broadcast_to(idx[:, None, :], mel.shape),
                                           axis=-1)
    return take(left) * (1.0 - frac) + take(left + 1) * frac


def sample_alpha(key, batch: int, max_warp: float) -> jax.Array:
    """[B] warp factors, log-uniform in [1 / (1 + max_warp), 1 + max_warp]."""
    r = math.log1p(max_warp)
    return jnp.exp(jax.random.uniform(key, (batch,), jnp.float32, -r, r))
