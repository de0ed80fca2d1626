"""Causal SEANet encoder and decoder over mel frames (model.md §4), with streaming forms.

Layout is channels-last. Encoder: mel [B, T, channels] -> z [B, ceil(T/hop), dimension].
Decoder: z [B, T', dimension] -> mel [B, hop*T', channels]. No final activation.

Children are named after the official `encoder.model.i` / `decoder.model.i` indices
(`layer_i`); the parameter-free ELUs occupy the missing indices. The layer list is built
from `SEANetConfig` the way moshi's SEANet builds it (the encoder walks the ratios in
reverse order, the decoder in order; residual block j uses dilation dilation_base**j),
so the official configuration gives exactly the table of model.md §4.

Streaming state is a dict {layer name: conv state} (ResBlocks: {"block_1", "block_3"});
`init_state` depends only on the config, so it works unbound or through `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import SEANetConfig
from secoustic_jax.layers.conv import CausalConv1d, CausalConvTranspose1d


@dataclass(frozen=True)
class LayerSpec:
    """One indexed SEANet layer. kind: "conv" | "convtr" | "res"; `elu_before` marks the
    ELU that sits at the previous official index."""

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    elu_before: bool = False


def _check(cfg: SEANetConfig) -> None:
    cfg.validate()
    if cfg.n_residual_layers < 0 or cfg.dilation_base < 1:
        raise ConfigError("seanet: need n_residual_layers >= 0 and dilation_base >= 1")
    if min(cfg.kernel_size, cfg.residual_kernel_size, cfg.last_kernel_size, cfg.compress) < 1:
        raise ConfigError("seanet: kernel sizes and compress must be >= 1")


def encoder_plan(cfg: SEANetConfig) -> list[LayerSpec]:
    """The encoder's indexed layers: conv, then per ratio (ResBlocks, ELU, strided conv),
    then ELU and the last conv to `dimension`."""
    _check(cfg)
    nf = cfg.n_filters
    plan = [LayerSpec("layer_0", "conv", cfg.channels, nf, cfg.kernel_size)]
    idx, mult = 1, 1
    for ratio in reversed(cfg.ratios):  # moshi's encoder reverses the ratios
        for j in range(cfg.n_residual_layers):
            plan.append(LayerSpec(f"layer_{idx}", "res", mult * nf, mult * nf,
                                  cfg.residual_kernel_size, dilation=cfg.dilation_base ** j))
            idx += 1
        idx += 1  # ELU
        plan.append(LayerSpec(f"layer_{idx}", "conv", mult * nf, 2 * mult * nf, 2 * ratio,
                              stride=ratio, elu_before=True))
        idx += 1
        mult *= 2
    idx += 1  # ELU
    plan.append(LayerSpec(f"layer_{idx}", "conv", mult * nf, cfg.dimension,
                          cfg.last_kernel_size, elu_before=True))
    return plan


def decoder_plan(cfg: SEANetConfig) -> list[LayerSpec]:
    """The decoder's indexed layers: conv from `dimension`, then per ratio (ELU, transposed
    conv, ResBlocks), then ELU and the last conv to `channels`."""
    _check(cfg)
    nf = cfg.n_filters
    mult = 2 ** len(cfg.ratios)
    plan = [LayerSpec("layer_0", "conv", cfg.dimension, mult * nf, cfg.kernel_size)]
    idx = 1
    for ratio in cfg.ratios:
        idx += 1  # ELU
        plan.append(LayerSpec(f"layer_{idx}", "convtr", mult * nf, mult * nf // 2, 2 * ratio,
                              stride=ratio, elu_before=True))
        idx += 1
        for j in range(cfg.n_residual_layers):
            plan.append(LayerSpec(f"layer_{idx}", "res", mult * nf // 2, mult * nf // 2,
                                  cfg.residual_kernel_size, dilation=cfg.dilation_base ** j))
            idx += 1
        mult //= 2
    idx += 1  # ELU
    plan.append(LayerSpec(f"layer_{idx}", "conv", nf, cfg.channels, cfg.last_kernel_size,
                          elu_before=True))
    return plan


def _run_conv(layer, x, state, mode):
    """Applies a conv layer in one of the modes "offline" | "step" | "flush" -> (state, y)."""
    if mode == "offline":
        return state, layer(x)
    if mode == "flush" and isinstance(layer, CausalConv1d):
        return layer.flush(state, x)
    return layer.step(state, x)


class ResBlock(nn.Module):
    """y = x + block_3(ELU(block_1(ELU(x)))): block_1 conv C->C/compress (k, dilation),
    block_3 conv C/compress->C (k1); identity shortcut. x [B, L, C] -> [B, L, C]."""

    dim: int
    kernel_size: int
    dilation: int = 1
    compress: int = 2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _convs(self, named: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Unnamed copies (for state shapes) get parent=None so that they are never bound.
        n1, n3 = (dict(name="block_1"), dict(name="block_3")) if named else ({"parent": None},) * 2
        return (CausalConv1d(self.dim // self.compress, self.kernel_size, 1, self.dilation,
                             **kw, **n1),
                CausalConv1d(self.dim, 1, **kw, **n3))

    def init_state(self, batch_size: int, dtype=jnp.float32) -> dict:
        conv1, conv3 = self._convs()
        return {"block_1": conv1.init_state(batch_size, self.dim, dtype),
                "block_3": conv3.init_state(batch_size, self.dim // self.compress, dtype)}

    @nn.compact
    def __call__(self, x, state=None, mode="offline"):
        """x [B, L, C] -> (state, y [B, L, C]); state is None offline."""
        conv1, conv3 = self._convs(named=True)
        state = dict(state) if state is not None else {"block_1": None, "block_3": None}
        state["block_1"], h = _run_conv(conv1, jax.nn.elu(x), state["block_1"], mode)
        state["block_3"], h = _run_conv(conv3, jax.nn.elu(h), state["block_3"], mode)
        return (None if mode == "offline" else state), x + h


def _make_layer(spec: LayerSpec, cfg: SEANetConfig, dtype, param_dtype, name=None):
    """The layer of `spec`; without a name it is a detached copy (parent=None) for shapes."""
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    kw.update(name=name) if name is not None else kw.update(parent=None)
    if spec.kind == "conv":
        return CausalConv1d(spec.out_ch, spec.kernel, spec.stride, spec.dilation, **kw)
    if spec.kind == "convtr":
        return CausalConvTranspose1d(spec.out_ch, spec.kernel, spec.stride, **kw)
    return ResBlock(spec.out_ch, spec.kernel, spec.dilation, cfg.compress, **kw)


def _plan_state(plan, cfg, batch_size, dtype):
    """Zero state of every layer of a plan (a pure function of the config)."""
    state = {}
    for spec in plan:
        layer = _make_layer(spec, cfg, jnp.float32, jnp.float32)
        if spec.kind == "res":
            state[spec.name] = layer.init_state(batch_size, dtype)
        else:
            state[spec.name] = layer.init_state(batch_size, spec.in_ch, dtype)
    return state


class _SEANetStack(nn.Module):
    """Shared runner: walks the plan, ELU where the official index list has one."""

    cfg: SEANetConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    # Subclasses define `plan() -> list[LayerSpec]`.

    def init_state(self, batch_size: int, dtype=jnp.float32) -> dict:
        """Zero streaming state: {layer name: conv state} for every layer of the plan."""
        return _plan_state(self.plan(), self.cfg, batch_size, dtype)

    @nn.compact
    def _run(self, x, state, mode):
        x = x.astype(self.dtype)
        new_state = {} if state is not None else None
        for spec in self.plan():
            layer = _make_layer(spec, self.cfg, self.dtype, self.param_dtype, name=spec.name)
            if spec.elu_before:
                x = jax.nn.elu(x)
            s = None if state is None else state[spec.name]
            if spec.kind == "res":
                s, x = layer(x, s, mode)
            else:
                s, x = _run_conv(layer, x, s, mode)
            if new_state is not None:
                new_state[spec.name] = s
        return new_state, x

    def _check_chunk(self, length: int, what: str) -> None:
        if length % self.cfg.hop:
            raise ValueError(f"{type(self).__name__}.step: {what} length {length} is not a "
                             f"multiple of hop {self.cfg.hop} (use flush for the tail)")


class SEANetEncoder(_SEANetStack):
    """mel [B, T, channels] -> z [B, ceil(T/hop), dimension] (causal)."""

    def plan(self) -> list[LayerSpec]:
        return encoder_plan(self.cfg)

    def __call__(self, mel: jax.Array) -> jax.Array:
        return self._run(mel, None, "offline")[1]

    def step(self, state: dict, mel: jax.Array) -> tuple[dict, jax.Array]:
        """mel [B, m*hop, channels] -> (state, z [B, m, dimension])."""
        self._check_chunk(mel.shape[1], "mel chunk")
        return self._run(mel, state, "step")

    def flush(self, state: dict, mel: jax.Array) -> tuple[dict, jax.Array]:
        """Last chunk of any length L (the tail after whole tokens) -> z [B, ceil(L/hop), d].

        Every strided conv appends E zeros to its buffered input, as the offline form does,
        so the last token equals the offline one even when T is not a multiple of hop.
        """
        return self._run(mel, state, "flush")


class SEANetDecoder(_SEANetStack):
    """z [B, T', dimension] -> mel [B, hop*T', channels] (causal, no final activation)."""

    def plan(self) -> list[LayerSpec]:
        return decoder_plan(self.cfg)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self._run(z, None, "offline")[1]

    def step(self, state: dict, z: jax.Array) -> tuple[dict, jax.Array]:
        """z [B, m, dimension] -> (state, mel [B, hop*m, channels]): final mel frames."""
        return self._run(z, state, "step")
