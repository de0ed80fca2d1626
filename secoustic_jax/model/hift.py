"""The HiFT vocoder (CosyVoice HiFTGenerator, model.md §14) as a Flax linen module.

mel [B, T, 80] (natural-log mel, channels-last) -> wav [B, 256 T] at 22.05 kHz.

Children mirror the official module names (the checkpoint table maps them):
`f0_predictor` (`condnet_{0,2,4,6,8}`, `classifier`), `m_source` (`l_linear`), `conv_pre`,
`ups_{0,1}`, `source_downs_{0,1}`, `source_resblocks_{0,1}`, `resblocks_{0..5}`,
`conv_post`.

The forward is split so that long inputs can be vocoded in chunks (secoustic_jax.vocoder):
`predict_f0(mel)` -> f0; `excitation(f0, phase_start, phi, noise)` -> s;
`decode(mel, s)` -> wav. `__call__` chains them for a whole utterance. Randomness is
never drawn here: phi [B, 9] and noise [B, 256 T, 9] are inputs; `None` means zero, which
is the deterministic source of the goldens (golden README §2).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.hift import HiFTConfig
from secoustic_jax.layers.hift_blocks import (Conv1d, F0Predictor, Linear, ResBlock, WNConv1d,
                                              WNConvTranspose1d)
from secoustic_jax.model import hift_source as dsp


class HarmonicSource(nn.Module):
    """SourceModuleHnNSF: 9 sines (+ noise), voiced mask, Linear(9 -> 1), tanh.

    inputs: f0 [B, T]; phase_start None or (hi, lo) [B, 9]; phi [B, 9] | None;
    noise [B, 256 T, 9] | None. Returns (excitation [B, 256 T], uv [B, 256 T]).
    """

    config: HiFTConfig

    @nn.compact
    def __call__(self, f0, phase_start=None, phi=None, noise=None):
        c = self.config
        inc = dsp.phase_increments(f0, c)
        frac = dsp.phase_fraction(inc, c.hop_length, phase_start)  # [B, N, K]
        theta = jnp.float32(2 * math.pi) * frac
        if phi is not None:
            theta = theta + phi[:, None, :]
        f0_up = jnp.repeat(f0, c.hop_length, axis=1)[..., None]  # nearest-neighbour x256
        uv = (f0_up > c.nsf_voiced_threshold).astype(jnp.float32)
        e = c.nsf_alpha * jnp.sin(theta) * uv
        if noise is not None:
            amp = uv * c.nsf_sigma + (1.0 - uv) * (c.nsf_alpha / 3)
            e = e + amp * noise
        s = jnp.tanh(Linear(1, name="l_linear")(e))
        return s[..., 0], uv[..., 0]


class HiFT(nn.Module):
    """HiFTGenerator. See the module docstring for the call structure."""

    config: HiFTConfig

    def setup(self):
        c = self.config
        self.f0_predictor = F0Predictor(c.f0_cond_channels, c.f0_num_layers)
        self.m_source = HarmonicSource(c)
        self.conv_pre = WNConv1d(c.base_channels, 7, padding=3)
        ups, downs, sres, res = [], [], [], []
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            ch = c.stage_channels(i)
            ups.append(WNConvTranspose1d(ch, k, u, (k - u) // 2))
            dk, ds, dp = c.source_down_geometry(i)
            downs.append(Conv1d(ch, dk, ds, dp))
            sres.append(ResBlock(c.source_resblock_kernel_sizes[i],
                                 c.source_resblock_dilation_sizes[i], c.snake_eps))
            for k_r, d_r in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                res.append(ResBlock(k_r, d_r, c.snake_eps))
        self.ups, self.source_downs, self.source_resblocks, self.resblocks = ups, downs, sres, res
        self.conv_post = WNConv1d(c.istft_n_fft + 2, 7, padding=3)

    def predict_f0(self, mel: jax.Array) -> jax.Array:
        """mel [B, T, 80] -> f0 [B, T] (Hz, >= 0)."""
        return self.f0_predictor(mel)

    def excitation(self, f0, phase_start=None, phi=None, noise=None) -> jax.Array:
        """f0 [B, T] -> excitation s [B, 256 T] (see HarmonicSource)."""
        return self.m_source(f0, phase_start, phi, noise)[0]

    def decode(self, mel: jax.Array, s: jax.Array, intermediates: bool = False):
        """mel [B, T, 80], s [B, 256 T] -> wav [B, 256 T] (or a dict of intermediates:
        source_stft [B, 64T+1, 18], magnitude / phase [B, 64T+1, 9], wav)."""
        c = self.config
        s_stft = dsp.stft(s, c.istft_n_fft, c.istft_hop)
        x = self.conv_pre(mel)
        nk = len(c.resblock_kernel_sizes)
        for i in range(len(self.ups)):
            x = self.ups[i](nn.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = jnp.concatenate([x[:, 1:2], x], axis=1)  # ReflectionPad1d((1, 0))
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs = self.resblocks[i * nk](x)
            for j in range(1, nk):
                xs = xs + self.resblocks[i * nk + j](x)
            x = xs / nk
        x = self.conv_post(nn.leaky_relu(x, c.final_lrelu_slope))
        nb = c.stft_bins
        magnitude = jnp.exp(x[..., :nb])
        phase = jnp.sin(x[..., nb:])  # the official "phase" is sin(x), in [-1, 1] rad
        mag = jnp.minimum(magnitude, c.magnitude_max)
        spec = jnp.concatenate([mag * jnp.cos(phase), mag * jnp.sin(phase)], axis=-1)
        wav = dsp.istft(spec, c.istft_n_fft, c.istft_hop)
        wav = jnp.clip(wav, -c.audio_limit, c.audio_limit)
        if intermediates:
            return {"source_stft": s_stft, "magnitude": magnitude, "phase": phase, "wav": wav}
        return wav

    def __call__(self, mel, phi=None, noise=None):
        """Whole utterance: mel [B, T, 80] -> wav [B, 256 T]; phi/noise None = zero."""
        f0 = self.predict_f0(mel)
        return self.decode(mel, self.excitation(f0, None, phi, noise))

    def forward_intermediates(self, mel, phi=None, noise=None) -> dict[str, Any]:
        """As `__call__`, returning f0, excitation, source_stft, magnitude, phase, wav."""
        f0 = self.predict_f0(mel)
        s = self.excitation(f0, None, phi, noise)
        return {"f0": f0, "excitation": s, **self.decode(mel, s, intermediates=True)}


def receptive_field_frames(cfg: HiFTConfig) -> int:
    """One-sided receptive field of `decode` in mel frames, given the excitation (an upper
    bound: every path's radius is added, each rounded up). `predict_f0` needs only
    `f0_num_layers` frames. Chunks need at least this much context on each side."""
    r = 3.0  # conv_pre k7
    rate = 1  # samples per mel frame at the current stage
    src_rate = cfg.hop_length // cfg.istft_hop  # STFT frames per mel frame
    r += cfg.istft_n_fft / 2 / cfg.hop_length  # source STFT window
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        r += math.ceil(k / u) / rate  # transposed conv: ceil(k/u) inputs per output
        rate *= u
        r += 1 / rate  # reflection pad / rounding
        dk = cfg.source_down_geometry(i)[0]
        r += dk / src_rate  # source_downs
        r += _resblock_radius(cfg.source_resblock_kernel_sizes[i],
                              cfg.source_resblock_dilation_sizes[i]) / rate
        r += max(_resblock_radius(k_r, d_r) for k_r, d_r in
                 zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)) / rate
    r += 3 / rate  # conv_post k7
    r += cfg.istft_n_fft / cfg.hop_length  # iSTFT overlap
    return math.ceil(r)


def _resblock_radius(kernel: int, dilations) -> int:
    return sum(d * (kernel - 1) // 2 + (kernel - 1) // 2 for d in dilations)
