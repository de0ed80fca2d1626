"""Streaming log-mel front end over incoming audio blocks (model.md §2, §11).

Equals the offline `audio.mel.log_mel` frame for frame: frame i covers original samples
[256 i - 384, 256 i + 640), so it can be emitted once 256 i + 640 samples have arrived:
**384 samples (17.4 ms) of look-ahead** beyond its own 256-sample hop block. The first
frames use the offline reflect padding at the start (available once 385 samples are in);
`flush` appends the right-end reflect padding of the offline front end and emits the
remaining floor(N / 256) - emitted frames.

Host-side buffering (numpy); the spectral maths runs in one jitted function on a fixed
[B, frames_per_call, 1024] block of frames (the last block is zero-padded and cut), so a
stream compiles it once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.audio.mel import hann_window, mel_basis, min_samples
from secoustic_jax.config.model import MelConfig


def lookahead_ms(cfg: MelConfig = MelConfig()) -> float:
    """Audio needed beyond a frame's own hop block: pad / sample_rate (384 -> 17.41 ms)."""
    return 1000.0 * cfg.pad / cfg.sample_rate


@functools.lru_cache(maxsize=4)
def _frames_to_mel(cfg: MelConfig):
    """Jitted frames [B, k, n_fft] -> log-mel [B, k, n_mels], the offline front end's maths."""
    window = jnp.asarray(hann_window(cfg.n_fft))
    basis = jnp.asarray(mel_basis(cfg)).T

    def run(frames):
        spec = jnp.fft.rfft(frames * window, n=cfg.n_fft, axis=-1)
        mag = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + cfg.mag_eps)
        mel = jnp.matmul(mag, basis, precision=jax.lax.Precision.HIGHEST)
        return jnp.log(jnp.maximum(mel, cfg.log_floor))

    return jax.jit(run)


class StreamingMel:
    """Streaming front end for B synchronised streams (same number of samples per push).

    push(samples [B, n]) -> mel [B, k, 80] with k a multiple of `frames_per_call` (maybe 0);
    flush() -> mel [B, r, 80]: the rest, so that the concatenation equals log_mel(wav).
    """

    def __init__(self, cfg: MelConfig = MelConfig(), batch: int = 1, frames_per_call: int = 1):
        if batch < 1 or frames_per_call < 1:
            raise ValueError(f"need batch, frames_per_call >= 1, got {batch}, {frames_per_call}")
        self.cfg, self.batch, self.frames_per_call = cfg, batch, frames_per_call
        self._raw = np.zeros((batch, 0), np.float32)  # samples before the left pad exists
        self._buf = None  # padded signal from padded index hop * emitted on
        self.received = 0
        self.emitted = 0
        self._done = False

    @property
    def lookahead_samples(self) -> int:
        return self.cfg.pad

    def _append(self, samples: np.ndarray) -> None:
        if self._buf is None:
            self._raw = np.concatenate([self._raw, samples], axis=1)
            if self._raw.shape[1] >= min_samples(self.cfg):  # left reflect pad needs 385
                pad = self._raw[:, 1:self.cfg.pad + 1][:, ::-1]  # numpy "reflect" mode
                self._buf = np.concatenate([pad, self._raw], axis=1)
                self._raw = None
        else:
            self._buf = np.concatenate([self._buf, samples], axis=1)

    def _ready(self, final: bool) -> int:
        """Frames computable now (all, when the right pad has been appended)."""
        if self._buf is None:
            return 0
        hop, n_fft = self.cfg.hop_length, self.cfg.n_fft
        have = (self._buf.shape[1] - n_fft) // hop + 1 if self._buf.shape[1] >= n_fft else 0
        if final:
            return self.received // hop - self.emitted
        return (have // self.frames_per_call) * self.frames_per_call

    def _emit(self, count: int) -> np.ndarray:
        hop, n_fft, k = self.cfg.hop_length, self.cfg.n_fft, self.frames_per_call
        if count == 0:
            return np.zeros((self.batch, 0, self.cfg.n_mels), np.float32)
        fn = _frames_to_mel(self.cfg)
        out = []
        for lo in range(0, count, k):
            n = min(k, count - lo)
            idx = (lo + np.arange(k))[:, None] * hop + np.arange(n_fft)[None, :]
            idx = np.minimum(idx, self._buf.shape[1] - 1)  # rows >= n are padding, cut below
            out.append(np.asarray(fn(jnp.asarray(self._buf[:, idx])))[:, :n])
        self.emitted += count
        self._buf = self._buf[:, count * hop:]
        return np.concatenate(out, axis=1)

    def push(self, samples) -> np.ndarray:
        """samples [B, n] (or [n] for B = 1) float at cfg.sample_rate -> new mel frames."""
        if self._done:
            raise ValueError("StreamingMel.push after flush: start a new stream")
        x = np.asarray(samples, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] != self.batch:
            raise ValueError(f"StreamingMel.push: expected [{self.batch}, n] samples, "
                             f"got shape {np.shape(samples)}")
        if not np.isfinite(x).all():
            raise ValueError("StreamingMel.push: samples contain NaN/Inf")
        self.received += x.shape[1]
        self._append(x)
        return self._emit(self._ready(False))

    def flush(self) -> np.ndarray:
        """End of stream: right reflect padding, remaining frames [B, r, 80]."""
        if self._done:
            raise ValueError("StreamingMel.flush called twice")
        if self._buf is None:
            raise ValueError(f"StreamingMel.flush: {self.received} samples; the front end "
                             f"needs at least {min_samples(self.cfg)}")
        self._done = True
        pad = self.cfg.pad
        tail = self._buf[:, -(pad + 1):-1][:, ::-1]  # wav[N-2-j], j = 0..pad-1
        self._buf = np.concatenate([self._buf, tail], axis=1)
        return self._emit(self._ready(True))
