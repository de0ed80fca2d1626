"""Frozen configs of the codec network (model.md) and its presets `86hz`, `21_5hz`, `tiny`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from secoustic_jax.config.base import ConfigError, apply_overrides


@dataclass(frozen=True)
class MelConfig:
    """The CosyVoice-1 HiFT log-mel front end (model.md §2). No learnable weights."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    mag_eps: float = 1e-9  # added to |X|^2 before the sqrt
    log_floor: float = 1e-5  # log(max(mel, floor))

    @property
    def pad(self) -> int:
        """Reflect padding on each side: (n_fft - hop) / 2 = 384."""
        return (self.n_fft - self.hop_length) // 2

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def validate(self) -> None:
        if (self.n_fft - self.hop_length) % 2:
            raise ConfigError("mel: n_fft - hop_length must be even")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError("mel: need 0 <= fmin < fmax <= sample_rate / 2")


@dataclass(frozen=True)
class SEANetConfig:
    """Causal SEANet encoder/decoder over mel frames (model.md §4)."""

    channels: int = 80
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (1, 1)
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    compress: int = 2
    dilation_base: int = 2

    @property
    def hop(self) -> int:
        """Mel frames per latent frame: the product of the ratios."""
        return math.prod(self.ratios)

    def validate(self) -> None:
        if any(r < 1 for r in self.ratios):
            raise ConfigError(f"seanet.ratios must be >= 1, got {self.ratios}")
        if self.n_filters % self.compress:
            raise ConfigError("seanet.n_filters must be divisible by compress")


@dataclass(frozen=True)
class TransformerConfig:
    """One projected causal transformer stack (model.md §5); the codec has four."""

    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # key s visible to query t iff 0 <= t - s < context
    max_period: float = 10000.0
    layer_scale: float = 0.01  # initial LayerScale value
    norm_eps: float = 1e-5
    attention_block: int = 128  # query block of the banded attention (offline)
    # The dense form is used whenever T <= attention_block + context - 1 (the band width):
    # there its T^2 logits are no more than the band's, and its backward pass is ~7x
    # faster on XLA:CPU (training crops: 260 tokens at 86 Hz). This field extends it to
    # longer inputs (memory O(T^2) up to that length).
    dense_attention_max_len: int = 0

    def uses_dense_attention(self, length: int) -> bool:
        """Whether offline attention over `length` tokens takes the dense form."""
        return length <= max(self.dense_attention_max_len, self.attention_block + self.context - 1)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def validate(self) -> None:
        if self.d_model % self.num_heads or self.head_dim % 2:
            raise ConfigError("transformer: d_model / num_heads must be an even integer")
        if self.context < 1 or self.attention_block < 1:
            raise ConfigError("transformer: context and attention_block must be >= 1")


@dataclass(frozen=True)
class FSQConfig:
    """Finite scalar quantisation (model.md §7): one codebook of prod(levels) codes."""

    levels: tuple[int, ...] = (3, 3, 3, 3, 3, 3, 3, 3)
    dim: int = 512

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    def validate(self) -> None:
        if any(l < 2 for l in self.levels):
            raise ConfigError(f"fsq.levels must be >= 2, got {self.levels}")


@dataclass(frozen=True)
class ParalinguisticConfig:
    """Utterance-level prompt encoder (model.md §8)."""

    n_mels: int = 80
    channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
    se_reduction: int = 16
    gru_hidden: int = 64
    embed_dim: int = 512
    prompt_frames: int = 300
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch convention: running <- (1 - m) running + m batch

    def validate(self) -> None:
        if len(self.channels) != 6:
            raise ConfigError("paralinguistic.channels must list 6 conv widths")
        if self.channels[-1] % self.se_reduction:
            raise ConfigError("paralinguistic: last width must be divisible by se_reduction")


@dataclass(frozen=True)
class CodecConfig:
    """The whole codec. `variant` names the preset the config was built from."""

    variant: str = "86hz"
    mel: MelConfig = field(default_factory=MelConfig)
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    fsq: FSQConfig = field(default_factory=FSQConfig)
    paralinguistic: ParalinguisticConfig = field(default_factory=ParalinguisticConfig)
    compute_dtype: str = "float32"  # "float32" or "bfloat16" (FSQ always float32)
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived values -------------------------------------------------------------
    @property
    def hop(self) -> int:
        """Mel frames per token: 1 (86 Hz) or 4 (21.5 Hz)."""
        return self.seanet.hop

    @property
    def samples_per_token(self) -> int:
        return self.hop * self.mel.hop_length

    @property
    def token_rate(self) -> float:
        """Tokens per second: 86.13 or 21.53."""
        return self.mel.sample_rate / self.samples_per_token

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def bitrate(self) -> float:
        """Nominal bits per second of the token stream (G not counted)."""
        return self.token_rate * self.fsq.bits_per_token

    def num_tokens(self, mel_frames: int) -> int:
        """T' for T mel frames: ceil applied per strided conv (equals ceil(T / hop))."""
        t = mel_frames
        for r in self.seanet.ratios:
            t = -(-t // r)
        return t

    def decoded_frames(self, mel_frames: int) -> int:
        """Mel frames returned by the decoder for a T-frame input: hop * T'."""
        return self.hop * self.num_tokens(mel_frames)

    def validate(self) -> None:
        for sub in (self.mel, self.seanet, self.transformer, self.fsq, self.paralinguistic):
            sub.validate()
        if self.seanet.channels != self.mel.n_mels:
            raise ConfigError("seanet.channels must equal mel.n_mels")
        if self.seanet.dimension != self.transformer.d_model or self.fsq.dim != self.transformer.d_model:
            raise ConfigError("seanet.dimension, fsq.dim and transformer.d_model must agree")
        if self.paralinguistic.embed_dim != self.transformer.d_model:
            raise ConfigError("paralinguistic.embed_dim must equal transformer.d_model")
        if self.compute_dtype not in ("float32", "bfloat16") or self.param_dtype not in ("float32", "bfloat16"):
            raise ConfigError("compute_dtype/param_dtype must be float32 or bfloat16")


VARIANT_RATIOS = {"86hz": (1, 1), "21_5hz": (2, 2)}


def codec_preset(name: str, overrides=None) -> CodecConfig:
    """The official presets `86hz` and `21_5hz`, and `tiny` for fast tests.

    `tiny` keeps every module and code path of the official network at a fraction of
    the width and depth (86 Hz geometry; override `seanet.ratios` for 21.5 Hz).
    `overrides` is a dict or list of dotted assignments applied afterwards.
    """
    if name in VARIANT_RATIOS:
        cfg = CodecConfig(variant=name, seanet=SEANetConfig(ratios=VARIANT_RATIOS[name]))
    elif name in ("tiny", "tiny_21_5hz"):
        ratios = (2, 2) if name == "tiny_21_5hz" else (1, 1)
        d = 64
        cfg = CodecConfig(
            variant=name,
            seanet=SEANetConfig(dimension=d, n_filters=16, ratios=ratios),
            transformer=TransformerConfig(d_model=d, num_heads=4, num_layers=2,
                                          dim_feedforward=128, attention_block=64),
            fsq=FSQConfig(dim=d),
            paralinguistic=ParalinguisticConfig(channels=(16, 16, 32, 32, 32, 32),
                                                gru_hidden=32, embed_dim=d),
        )
    else:
        raise ConfigError(f"unknown codec preset {name!r} (have 86hz, 21_5hz, tiny, tiny_21_5hz)")
    return apply_overrides(cfg, overrides)


def golden_tiny(variant: str) -> CodecConfig:
    """The configuration of the official-tiny goldens: full widths, 1 layer, FFN 256."""
    return codec_preset(variant, {"transformer.num_layers": 1, "transformer.dim_feedforward": 256})
