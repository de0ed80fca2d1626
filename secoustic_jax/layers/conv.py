"""Causal 1-D convolution and transposed convolution with streaming forms (model.md §4).

Layout is channels-last: inputs `[B, L, C_in]`, outputs `[B, L', C_out]`.

Parameters (Flax side, see docs/DEVELOPING.md):
- `CausalConv1d`: `kernel [k, in, out]` (= torch `W[out, in, k]` transposed to `[k, in, out]`),
  `bias [out]`.
- `CausalConvTranspose1d`: `kernel [k, in, out]` **unflipped**, `kernel[j] = W_torch[:, :, j]`
  (torch stores `[in, out, k]`); tap j of the scatter-add `y[s*t + j] += x[t] @ kernel[j]`.
  The layer flips the kernel at run time.

Streaming: both layers have `init_state(batch_size, in_features, dtype)` and
`step(state, x) -> (state, y)`. `init_state` only reads the module's fields, so it works
on an unbound module as well as through `module.apply(..., method="init_state")`. Chunks fed
to `step` must have lengths that are multiples of the stride. `CausalConv1d.flush` handles
the final (possibly partial) chunk exactly like the offline right padding.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax import ops
from secoustic_jax.layers.common import CONV_IN, CONV_K, CONV_OUT, param, torch_uniform


def effective_kernel(kernel_size: int, dilation: int) -> int:
    """k_eff = (k - 1) * d + 1: the span of one dilated window."""
    return (kernel_size - 1) * dilation + 1


def extra_right_padding(length: int, kernel_size: int, stride: int, dilation: int = 1) -> int:
    """E of model.md §4: zeros appended so the last strided window is complete.

    With P = k_eff - s left zeros, moshi's formula reduces to E = ceil(L/s)*s - L, i.e.
    E = (-L) mod s (E = L mod 2 for k4 s2; 0 for s = 1). Output length is then ceil(L/s).
    """
    k_eff = effective_kernel(kernel_size, dilation)
    pad = k_eff - stride
    n_frames = -(-(length - k_eff + pad) // stride) + 1  # ceil((L - k_eff + P)/s + 1)
    return (n_frames - 1) * stride + (k_eff - pad) - length


def _check_geometry(name: str, kernel_size: int, stride: int, dilation: int) -> None:
    if kernel_size < 1 or stride < 1 or dilation < 1:
        raise ValueError(f"{name}: kernel_size, stride, dilation must be >= 1, "
                         f"got k={kernel_size} s={stride} d={dilation}")
    if effective_kernel(kernel_size, dilation) < stride:
        # Windows would skip input frames and the causal state (k_eff - s frames) is negative.
        raise ValueError(f"{name}: effective kernel {effective_kernel(kernel_size, dilation)} "
                         f"is smaller than stride {stride}")


def _check_chunk(name: str, length: int, stride: int) -> None:
    if length % stride:
        raise ValueError(f"{name}.step: chunk length {length} is not a multiple of stride "
                         f"{stride} (use flush for the last, partial chunk)")


class CausalConv1d(nn.Module):
    """Causal Conv1d with zero left padding k_eff - s and moshi's right padding E.

    x [B, L, C_in] -> y [B, ceil(L / stride), features].
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32

    @property
    def state_frames(self) -> int:
        """Input frames kept between streaming calls: k_eff - s (the causal left context)."""
        return effective_kernel(self.kernel_size, self.dilation) - self.stride

    def __call__(self, x: jax.Array) -> jax.Array:
        """Offline: x [B, L, C_in] -> [B, ceil(L/s), features]."""
        return self._run(x, None, "offline")[1]

    def init_state(self, batch_size: int, in_features: int, dtype=jnp.float32) -> jax.Array:
        """Zeros [B, k_eff - s, C_in]: the left padding of the offline form."""
        _check_geometry("CausalConv1d", self.kernel_size, self.stride, self.dilation)
        return jnp.zeros((batch_size, self.state_frames, in_features), dtype)

    def step(self, state: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Streaming: state [B, k_eff-s, C_in], x [B, m*s, C_in] -> (state, y [B, m, features])."""
        _check_chunk("CausalConv1d", x.shape[1], self.stride)
        return self._run(x, state, "step")

    def flush(self, state: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """End of stream: x [B, L, C_in] of any length -> (state, y [B, ceil(L/s), features]).

        Appends E = (-L) mod s zeros to the buffered input, which is exactly the offline
        right padding when all earlier chunks had lengths that are multiples of s.
        """
        return self._run(x, state, "flush")

    @nn.compact
    def _run(self, x, state, mode):
        """The single compact method (Flax allows one): declares params, then pads per mode."""
        _check_geometry("CausalConv1d", self.kernel_size, self.stride, self.dilation)
        in_features = x.shape[-1]
        init = torch_uniform(in_features * self.kernel_size)  # torch Conv1d fan_in = in * k
        kernel = param(self, "kernel", init, (self.kernel_size, in_features, self.features),
                       (CONV_K, CONV_IN, CONV_OUT), self.param_dtype).astype(self.dtype)
        bias = param(self, "bias", init, (self.features,), (CONV_OUT,),
                     self.param_dtype).astype(self.dtype)
        length = x.shape[1]
        if length == 0:
            return state, jnp.zeros((x.shape[0], 0, self.features), self.dtype)
        if mode == "offline":
            extra = extra_right_padding(length, self.kernel_size, self.stride, self.dilation)
            buf = jnp.pad(x, ((0, 0), (self.state_frames, extra), (0, 0)))
        else:
            if mode == "flush":
                x = jnp.pad(x, ((0, 0), (0, (-length) % self.stride), (0, 0)))
            buf = jnp.concatenate([state.astype(x.dtype), x], axis=1)
            state = buf[:, buf.shape[1] - self.state_frames:].astype(state.dtype)
        y = ops.conv1d_valid(buf.astype(self.dtype), kernel, self.stride, self.dilation)
        return state, y + bias


class CausalConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d, all of the k - s overhang trimmed on the right.

    x [B, L, C_in] -> y [B, stride * L, features].
    """

    features: int
    kernel_size: int
    stride: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def state_frames(self) -> int:
        """Output frames that overhang into the next call: k - s."""
        return self.kernel_size - self.stride

    def __call__(self, x: jax.Array) -> jax.Array:
        """Offline: x [B, L, C_in] -> [B, s*L, features]."""
        return self._run(x, None)[1]

    def init_state(self, batch_size: int, in_features: int | None = None,
                   dtype=jnp.float32) -> jax.Array:
        """Zeros [B, k - s, features] (partial output sums; `in_features` is not needed)."""
        del in_features  # the state lives in output space; kept for a uniform signature
        _check_geometry("CausalConvTranspose1d", self.kernel_size, self.stride, 1)
        return jnp.zeros((batch_size, self.state_frames, self.features), dtype)

    def step(self, state: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Streaming: state [B, k-s, out] (no bias), x [B, m, C_in] -> (state, y [B, s*m, out])."""
        return self._run(x, state)

    @nn.compact
    def _run(self, x, state):
        """Declares params; computes the untrimmed scatter-add, then trims or carries."""
        _check_geometry("CausalConvTranspose1d", self.kernel_size, self.stride, 1)
        k, s = self.kernel_size, self.stride
        # torch computes fan_in from weight axis 1, which is `out` for transposed convs.
        init = torch_uniform(self.features * k)
        kernel = param(self, "kernel", init, (k, x.shape[-1], self.features),
                       (CONV_K, CONV_IN, CONV_OUT), self.param_dtype).astype(self.dtype)
        bias = param(self, "bias", init, (self.features,), (CONV_OUT,),
                     self.param_dtype).astype(self.dtype)
        if x.shape[1] == 0:
            return state, jnp.zeros((x.shape[0], 0, self.features), self.dtype)
        # Dilating the input by s and correlating with the k-flipped kernel under padding
        # (k-1, k-1) gives full[n] = sum_{s*t + j = n} x[t] @ kernel[j], length (L-1)*s + k.
        full = jax.lax.conv_general_dilated(
            x.astype(self.dtype), jnp.flip(kernel, axis=0), window_strides=(1,),
            padding=[(k - 1, k - 1)], lhs_dilation=(s,), dimension_numbers=ops.DIMENSION_NUMBERS)
        emit = s * x.shape[1]
        if state is not None:
            # The previous call's overhang (no bias) is added to the head of this output.
            full = full.at[:, : self.state_frames].add(state.astype(full.dtype))
            state = full[:, emit:].astype(state.dtype)
        return state, full[:, :emit] + bias
