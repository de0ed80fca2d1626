"""Frozen config of the HiFT vocoder (model.md §14): defaults are the official constructor values.

`hift_tiny()` is the configuration of the golden files (`hift_tiny.safetensors`, golden
README §2): base_channels 64 and f0 cond_channels 64, everything else official.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secoustic_jax.config.base import ConfigError, apply_overrides


@dataclass(frozen=True)
class HiFTConfig:
    """CosyVoice HiFTGenerator at its constructor defaults (22.05 kHz, mel hop 256)."""

    in_channels: int = 80  # mel bins
    base_channels: int = 512
    f0_cond_channels: int = 512  # ConvRNNF0Predictor width (5 conv layers, k3)
    f0_num_layers: int = 5
    nb_harmonics: int = 8  # 9 sinusoids: f0 * 1 ... f0 * 9
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1  # sine amplitude
    nsf_sigma: float = 0.003  # voiced noise std (unvoiced: nsf_alpha / 3)
    nsf_voiced_threshold: float = 10.0  # Hz; voiced iff f0 > threshold
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    istft_n_fft: int = 16
    istft_hop: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1  # inside the stages
    final_lrelu_slope: float = 0.01  # F.leaky_relu default before conv_post
    audio_limit: float = 0.99  # output clamp
    magnitude_max: float = 100.0  # clip of exp(log-magnitude) before the iSTFT
    snake_eps: float = 1e-9  # Snake: x + sin^2(a x) / (a + eps)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived values -------------------------------------------------------------
    @property
    def num_sines(self) -> int:
        return self.nb_harmonics + 1

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame: prod(upsample_rates) * istft_hop = 256."""
        return math.prod(self.upsample_rates) * self.istft_hop

    @property
    def stft_bins(self) -> int:
        return self.istft_n_fft // 2 + 1

    def stage_channels(self, i: int) -> int:
        """Channels after ups[i]: base_channels / 2^(i+1)."""
        return self.base_channels // 2 ** (i + 1)

    def source_down_geometry(self, i: int) -> tuple[int, int, int]:
        """(kernel, stride, padding) of source_downs[i]: k1 when the stage rate equals the
        STFT frame rate, else (2u, u, u/2) with u the remaining upsampling factor."""
        rates = list(self.upsample_rates)
        u = math.prod(rates[i + 1:])
        return (1, 1, 0) if u == 1 else (2 * u, u, u // 2)

    def validate(self) -> None:
        n = len(self.upsample_rates)
        if len(self.upsample_kernel_sizes) != n or len(self.source_resblock_kernel_sizes) != n:
            raise ConfigError("hift: upsample_rates, upsample_kernel_sizes and "
                              "source_resblock_kernel_sizes need one entry per stage")
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise ConfigError("hift: one dilation list per resblock kernel")
        if len(self.source_resblock_dilation_sizes) != n:
            raise ConfigError("hift: one source dilation list per stage")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ConfigError(f"hift: upsample kernel {k} - rate {u} must be even")
        if self.base_channels % 2 ** n:
            raise ConfigError(f"hift: base_channels must be divisible by {2 ** n}")
        if self.istft_n_fft % self.istft_hop or self.istft_n_fft % 2:
            raise ConfigError("hift: istft_n_fft must be even and a multiple of istft_hop")


def hift_preset(name: str = "official", overrides=None) -> HiFTConfig:
    """`official` (the hift.pt network) or `tiny` (the golden network); then overrides."""
    if name == "official":
        cfg = HiFTConfig()
    elif name == "tiny":
        cfg = hift_tiny()
    else:
        raise ConfigError(f"unknown hift preset {name!r} (have official, tiny)")
    return apply_overrides(cfg, overrides)


def hift_tiny() -> HiFTConfig:
    """The golden network (golden README §2): base_channels 64, f0 cond_channels 64."""
    return HiFTConfig(base_channels=64, f0_cond_channels=64)
