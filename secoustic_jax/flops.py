"""Model FLOPs accounting for any codec config: encode, decode and train steps.

These are *model* FLOPs (2 per multiply-accumulate of the network as specified, with the
exact 250-frame attention window), the numerator of utilisation figures. They do not
count the work an implementation wastes (masked logits inside attention bands, padding),
which `xla_flops` reports for a compiled function instead.

Training FLOPs follow the usual rule: a trainable module costs 3x its forward pass
(forward, input gradient, weight gradient); a frozen module whose output is
stop-gradiented costs 1x (forward only); a module not run in a stage costs nothing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp

from secoustic_jax.config.model import CodecConfig, SEANetConfig, TransformerConfig


def conv1d(length_out: int, kernel: int, c_in: int, c_out: int) -> float:
    return 2.0 * length_out * kernel * c_in * c_out


def attention_pairs(length: int, context: int) -> int:
    """Number of (query, key) pairs with 0 <= t - s < context, for t < length."""
    full = max(length - context, 0)
    ramp = length - full  # the first `ramp` queries see t + 1 keys
    return full * context + ramp * (ramp + 1) // 2


def transformer(cfg: TransformerConfig, length: int) -> float:
    """One ProjectedTransformer stack over `length` frames."""
    d, f = cfg.d_model, cfg.dim_feedforward
    dense = 2.0 * length * (3 * d * d + d * d + 2 * d * f)
    attn = 4.0 * d * attention_pairs(length, cfg.context)  # q.k and p.v
    return cfg.num_layers * (dense + attn)


def _resblock(c: int, length: int, cfg: SEANetConfig) -> float:
    hidden = c // cfg.compress
    return conv1d(length, cfg.residual_kernel_size, c, hidden) + conv1d(length, 1, hidden, c)


def seanet_encoder(cfg: SEANetConfig, frames: int) -> float:
    length, c = frames, cfg.n_filters
    total = conv1d(length, cfg.kernel_size, cfg.channels, c)
    for r in cfg.ratios:
        total += _resblock(c, length, cfg)
        length = -(-length // r)
        total += conv1d(length, 2 * r, c, 2 * c)
        c *= 2
    return total + conv1d(length, cfg.last_kernel_size, c, cfg.dimension)


def seanet_decoder(cfg: SEANetConfig, tokens: int) -> float:
    c = cfg.n_filters * 2 ** len(cfg.ratios)
    length = tokens
    total = conv1d(length, cfg.kernel_size, cfg.dimension, c)
    for r in reversed(cfg.ratios):
        total += 2.0 * length * 2 * r * c * (c // 2)  # transposed conv: every input tap
        length *= r
        c //= 2
        total += _resblock(c, length, cfg)
    return total + conv1d(length, cfg.last_kernel_size, c, cfg.channels)


def paralinguistic(cfg: CodecConfig, prompt_frames: int) -> float:
    p = cfg.paralinguistic
    widths = (p.n_mels,) + tuple(p.channels)
    total = sum(conv1d(prompt_frames, 3, a, b) for a, b in zip(widths[:-1], widths[1:]))
    c, h = widths[-1], p.gru_hidden
    total += 2.0 * prompt_frames * 3 * h * (c + h)  # GRU input and recurrent matmuls
    return total + 2.0 * 2 * h * p.embed_dim  # dense_mu and dense_var


@dataclasses.dataclass(frozen=True)
class CodecFlops:
    """Forward FLOPs of each module for one utterance of `frames` mel frames."""

    encoder: float
    encoder_transformer: float
    semantic: float  # semantic transformer + VAE heads
    fsq: float
    paralinguistic: float
    connector: float
    decoder_transformer: float
    decoder: float

    def total(self, *names: str) -> float:
        return sum(getattr(self, n) for n in names)


def codec_forward(cfg: CodecConfig, frames: int, prompt_frames: int | None = None) -> CodecFlops:
    tokens = cfg.num_tokens(frames)
    d = cfg.transformer.d_model
    code = len(cfg.fsq.levels)
    prompt = min(frames, cfg.paralinguistic.prompt_frames) if prompt_frames is None else prompt_frames
    return CodecFlops(
        encoder=seanet_encoder(cfg.seanet, frames),
        encoder_transformer=transformer(cfg.transformer, tokens),
        semantic=transformer(cfg.transformer, tokens) + 2.0 * tokens * 2 * d * d,
        fsq=2.0 * tokens * 2 * d * code,
        paralinguistic=paralinguistic(cfg, prompt),
        connector=transformer(cfg.transformer, tokens),
        decoder_transformer=transformer(cfg.transformer, tokens),
        decoder=seanet_decoder(cfg.seanet, tokens),
    )


def inference(cfg: CodecConfig, frames: int) -> dict[str, float]:
    """FLOPs of the inference entry points for one utterance of `frames` mel frames."""
    f = codec_forward(cfg, frames)
    return {
        "encode": f.total("encoder", "encoder_transformer", "semantic", "fsq"),
        "encode_tokens": f.total("encoder", "semantic", "fsq"),
        "prompt_embedding": f.paralinguistic,
        "decode_tokens": f.total("fsq", "connector", "decoder_transformer", "decoder"),
        "decode_acoustic": f.total("decoder_transformer", "decoder"),
    }


# Which modules a stage runs, and how: 3 = trained (fwd + 2 bwd), 1 = frozen forward.
STAGE_COST = {
    1: {"encoder": 3, "encoder_transformer": 3, "decoder_transformer": 3, "decoder": 3},
    2: {"encoder": 1, "encoder_transformer": 1, "semantic": 3, "fsq": 3, "paralinguistic": 3,
        "connector": 3},
    3: {"encoder": 3, "encoder_transformer": 3, "semantic": 3, "fsq": 3, "paralinguistic": 3,
        "connector": 3, "decoder_transformer": 6, "decoder": 6},  # both decode paths
}


def train_step(cfg: CodecConfig, stage: int, batch: int, frames: int,
               prompt_frames: int = 300, extra_forward: float = 0.0) -> float:
    """Model FLOPs of one optimizer step on `batch` crops of `frames` mel frames.

    `extra_forward`: forward FLOPs per utterance of training-only modules (phoneme
    encoder, contrastive heads and logits), counted 3x in stages 2 and 3.
    """
    if stage not in STAGE_COST:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    f = codec_forward(cfg, frames, prompt_frames)
    per_utt = sum(mult * getattr(f, name) for name, mult in STAGE_COST[stage].items())
    if stage >= 2:
        per_utt += 3.0 * extra_forward
    return batch * per_utt


def xla_flops(fn: Callable, *args, **kwargs) -> float:
    """FLOPs of `fn` as compiled by XLA (abstract args are fine: nothing is executed)."""
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul throughput of the default JAX device, in FLOP/s (median)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2.0 * n ** 3 / times[len(times) // 2]
