"""Logical axis names, PyTorch-default initialisers and dtype helpers shared by all layers.

Parameters are declared with `nn.with_logical_partitioning(init, axes)` so that
`secoustic_jax.training.sharding` can map them onto any mesh by rules, without touching
the model code. The names below are the whole vocabulary.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# ---- logical axis vocabulary --------------------------------------------------------
EMBED = "embed"  # model width d (512)
MLP = "mlp"  # feed-forward width (2048)
QKV = "qkv"  # fused q|k|v output (3 d)
HEADS = "heads"  # attention output projection input (d, head-major)
CONV_K = "conv_k"  # convolution taps
CONV_IN = "conv_in"  # convolution input channels
CONV_OUT = "conv_out"  # convolution output channels
NORM = "norm"  # per-channel vectors: norms, LayerScale, biases of small layers
CODE = "code"  # FSQ code dimension (8)
GATES = "gates"  # GRU stacked gates (3 H)
HIDDEN = "hidden"  # GRU hidden / small dense inputs
VOCAB = "vocab"  # embedding tables (phonemes)
BATCH = "batch"  # activations: the batch axis
LENGTH = "length"  # activations: the time axis

LOGICAL_AXES = (EMBED, MLP, QKV, HEADS, CONV_K, CONV_IN, CONV_OUT, NORM, CODE, GATES,
                HIDDEN, VOCAB, BATCH, LENGTH)


def torch_uniform(fan_in: int):
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (training.md §6)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(features: int, fan_in: int, axes: tuple[str, str], name: str | None = None, *,
                bias_axis: str | None = None, use_bias: bool = True, dtype=None,
                param_dtype=jnp.float32) -> nn.Dense:
    """nn.Dense [..., fan_in] -> [..., features] with torch Linear's default init
    (U(+-1/sqrt(fan_in)) for weight and bias) and logical axis names: `axes` for the
    kernel, `bias_axis` (default axes[1]) for the bias."""
    init = torch_uniform(fan_in)
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(init, axes),
                    bias_init=nn.with_logical_partitioning(init, (bias_axis or axes[1],)))


def constant(value: float):
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


def param(module: nn.Module, name: str, init, shape, axes, dtype=jnp.float32):
    """Declares a parameter carrying logical axis names (boxed at init, plain at apply)."""
    if len(axes) != len(shape):
        raise ValueError(f"{name}: {len(axes)} axis names for shape {shape}")
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def dtype_of(name: str):
    """'float32' | 'bfloat16' -> jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
