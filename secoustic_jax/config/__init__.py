"""Frozen dataclass configs. Import order: config -> layers -> quantizer -> model -> ..."""

from secoustic_jax.config.base import (ConfigError, apply_overrides, diff, fingerprint,
                                       from_dict, override, to_dict)
from secoustic_jax.config.model import (CodecConfig, FSQConfig, MelConfig, ParalinguisticConfig,
                                        SEANetConfig, TransformerConfig, codec_preset, golden_tiny)

__all__ = [
    "ConfigError", "apply_overrides", "diff", "fingerprint", "from_dict", "override", "to_dict",
    "CodecConfig", "FSQConfig", "MelConfig", "ParalinguisticConfig", "SEANetConfig",
    "TransformerConfig", "codec_preset", "golden_tiny",
]
