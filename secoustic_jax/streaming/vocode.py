"""Waveform streaming: HiFT vocoding in fixed windows with look-ahead (model.md §14).

HiFT is not causal (same-padded convs, a non-causal f0 predictor, centred STFT/iSTFT), so
a stream vocodes windows of W = block + 2 R mel frames, R = `receptive_field_frames`
(every output sample inside the window's core has all its context), and emits the core.
f0 is predicted with its own F = f0_num_layers frames of context and kept (final values
only); the harmonic phase is carried across windows in double-float
(`hift_source.frame_offsets` with a start offset) and the noise is indexed by absolute
sample, so the streamed waveform equals `Vocoder(mel)` up to float rounding.

Added latency (beyond the codec): a frame's samples come out once R + F frames after it
have been decoded, and only in blocks: at most (block + R + F) frames, i.e.
(block + R + F) * 11.61 ms; the first block waits for block + 2 R + F frames.
`added_latency_ms` states it for a vocoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.model import hift_source as dsp

HOP = 256


def added_latency_ms(vocoder, block_frames: int, sample_rate: int = 22050) -> dict:
    """{"steady_ms", "first_ms"}: look-ahead of the chunked vocoder in milliseconds."""
    r, f = vocoder._context, vocoder.config.f0_num_layers
    frame = 1000.0 * HOP / sample_rate
    return {"steady_ms": (block_frames + r + f) * frame,
            "first_ms": (block_frames + 2 * r + f) * frame, "receptive_field_frames": r}


class StreamingVocoder:
    """mel frames [B, n, 80] in (any n per push) -> waveform [B, 256 k] out, exact windows."""

    def __init__(self, vocoder, batch: int = 1, block_frames: int = 16, seed: int = 0,
                 deterministic: bool = False):
        if vocoder.is_fallback:
            raise ValueError("StreamingVocoder needs HiFT weights (Griffin-Lim cannot stream)")
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.voc, self.batch, self.block = vocoder, batch, block_frames
        self.r, self.f = vocoder._context, vocoder.config.f0_num_layers
        self.key = jax.random.PRNGKey(seed)
        self.randomness = jnp.float32(0.0 if deterministic else 1.0)
        self.mel = np.zeros((batch, 0, vocoder.config.in_channels), np.float32)
        self.f0 = np.zeros((batch, 0), np.float32)  # final f0 of frames 0 .. len-1
        self.emitted = 0
        self._off_frame, self._off = 0, None  # phase offset (hi, lo) [B, K] at _off_frame
        self._done = False

    @property
    def width(self) -> int:
        return self.block + 2 * self.r

    def _extend_f0(self, final: bool) -> None:
        """Computes f0 for frames that now have F frames of context (all, at the end)."""
        t, have = self.mel.shape[1], self.f0.shape[1]
        upto = t if final else t - self.f
        if upto <= have:
            return
        lo = max(0, have - self.f)
        hi = t if final else min(t, upto + self.f)
        part = np.asarray(self.voc._f0_fn(self.voc.variables, jnp.asarray(self.mel[:, lo:hi])))
        self.f0 = np.concatenate([self.f0, part[:, have - lo:upto - lo]], axis=1)

    def _offset_at(self, frame: int):
        """Double-float phase offset at `frame` (monotonic: advanced from the last one)."""
        cfg = self.voc.config
        if self._off is None or frame < self._off_frame:  # start, or the final window
            self._off_frame = 0
            zeros = jnp.zeros((self.batch, cfg.num_sines), jnp.float32)
            self._off = (zeros, zeros)
        if frame > self._off_frame:
            inc = dsp.phase_increments(jnp.asarray(self.f0[:, self._off_frame:frame]), cfg)
            self._off = dsp.end_offset(inc, cfg.hop_length, self._off)
            self._off_frame = frame
        return self._off

    def _window(self, start: int, width: int, lo: int, hi: int) -> np.ndarray:
        sl = slice(start, start + width)
        wav = self.voc._synth(self.voc.variables, jnp.asarray(self.mel[:, sl]),
                              jnp.asarray(self.f0[:, sl]), self._offset_at(start), self.key,
                              jnp.int32(start * HOP), self.randomness)
        self.emitted = hi
        return np.asarray(wav)[:, (lo - start) * HOP:(hi - start) * HOP]

    def push(self, mel) -> np.ndarray:
        """Appends decoded mel [B, n, 80]; returns the newly final samples [B, 256 k]."""
        if self._done:
            raise ValueError("StreamingVocoder.push after flush")
        mel = np.asarray(mel, np.float32)
        if mel.ndim != 3 or mel.shape[0] != self.batch:
            raise ValueError(f"StreamingVocoder.push: expected [{self.batch}, n, 80], got "
                             f"{mel.shape}")
        self.mel = np.concatenate([self.mel, mel], axis=1)
        self._extend_f0(final=False)
        out = [np.zeros((self.batch, 0), np.float32)]
        while True:
            start = max(0, self.emitted - self.r)
            if start + self.width > self.f0.shape[1]:
                break
            out.append(self._window(start, self.width, self.emitted, start + self.width - self.r))
        return np.concatenate(out, axis=1)

    def flush(self) -> np.ndarray:
        """End of stream: vocodes the remaining frames with the utterance end as window edge."""
        if self._done:
            raise ValueError("StreamingVocoder.flush called twice")
        self._done = True
        self._extend_f0(final=True)
        t = self.mel.shape[1]
        out = [np.zeros((self.batch, 0), np.float32)]
        while self.emitted < t:
            start = max(0, self.emitted - self.r)
            if start + self.width < t:  # an ordinary window still fits before the end
                out.append(self._window(start, self.width, self.emitted,
                                        start + self.width - self.r))
            else:  # the last window ends at the utterance end (its left edge <= start)
                width = min(t, self.width)
                out.append(self._window(t - width, width, self.emitted, t))
        return np.concatenate(out, axis=1)
