"""Opt-in bf16 convolutions for the HiFT decoder: bf16 operands, float32 accumulation.

The decoder's weight-normed convs (conv_pre and the ResBlocks: ~90 % of HiFT's 520 GFLOP
per 10 s) run in float32 at ~300 GFLOP/s on 2 Zen 5 cores; XLA:CPU's own bf16 convs are
no faster (they are widened). `bf16_convs()` is a `flax.linen.intercept_methods`
interceptor that sends every `WNConv1d` with Cout % 64 == 0 and an even Cin to
`ops.conv1d_bf16`: XLA's conv with bf16 operands and float32 accumulation (native on
GPU/TPU), or on CPU the seam's VDPBF16PS kernel (580-670 GFLOP/s at those shapes).
Weights are weight-normed in float32 first, then rounded to bf16 (round to nearest
even); activations are rounded per conv; Snake, the upsampling (transposed)
convs, conv_post (18 channels), the source path, the f0 predictor and the iSTFT stay
float32. `Vocoder(conv_dtype="bfloat16")` uses it; the float32 default never does.

What it costs in accuracy is measured, not assumed: `bench/bench_vocoder.py` reports the
waveform SNR against the float32 vocoder (bench/NOTES.md section 9).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from secoustic_jax import ops
from secoustic_jax.layers.hift_blocks import WNConv1d, weight_norm

CONV_DTYPES = ("float32", "bfloat16")


def conv1d_bf16(x, w, b, dilation: int, pad: int):
    """x f32[B, T, Cin], w f32[K, Cin, Cout], b [Cout] -> f32[B, T + 2 pad - d (K-1), Cout]
    with bf16-rounded x and w and float32 accumulation (Cout % 64 == 0, Cin even)."""
    return ops.conv1d_bf16(x, w, b, dilation, pad)


def takes_bf16(module: WNConv1d, cin: int) -> bool:
    """Whether `bf16_convs` routes this conv (the kernel's tile shapes)."""
    return module.features % 64 == 0 and cin % 2 == 0


def _intercept(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, WNConv1d) and context.method_name == "__call__":
        (x,) = args
        if takes_bf16(module, x.shape[-1]):
            get = lambda n: module.get_variable("params", n)  # noqa: E731
            w = weight_norm(get("weight_v"), get("weight_g"), (0, 1), 2)
            k, d = w.shape[0], module.dilation
            pad = d * (k - 1) // 2 if module.padding is None else module.padding
            return conv1d_bf16(x.astype(jnp.float32), w, get("bias"), d, pad)
    return next_fun(*args, **kwargs)


def bf16_convs():
    """Context manager, used inside a traced function around `HiFT.decode`."""
    return nn.intercept_methods(_intercept)


def check_conv_dtype(conv_dtype: str) -> str:
    """Validates a Vocoder conv_dtype; bf16 on CPU needs a kernel build with AVX512_BF16."""
    if conv_dtype not in CONV_DTYPES:
        raise ValueError(f"conv_dtype must be one of {CONV_DTYPES}, got {conv_dtype!r}")
    if conv_dtype == "bfloat16" and not ops.has_bf16_conv():
        raise ValueError("conv_dtype='bfloat16' needs a CPU with AVX512_BF16 (this one "
                         "has none); use the float32 vocoder")
    return conv_dtype
