"""Building blocks of the HiFT vocoder (model.md §14), channels-last `[B, L, C]`.

Weight norm is kept as two parameters, exactly as the official parametrisation stores it,
so that the parameter count (g and v counted separately) and the import -> export round
trip are exact; the kernel w = v * (g / ||v||) is formed in the forward pass:

- `WNConv1d`: `weight_v [k, in, out]` (torch `original1 [out, in, k]` transposed),
  `weight_g [out]` (torch `original0 [out, 1, 1]`), `bias [out]`; the norm runs over the
  taps and input channels (all axes except torch axis 0 = output channel).
- `WNConvTranspose1d`: `weight_v [k, in, out]` unflipped (`weight_v[j] = W_torch[:, :, j]`,
  torch stores `[in, out, k]`), `weight_g [in]` (torch `[in, 1, 1]`); the norm runs over
  taps and OUTPUT channels (all except torch axis 0 = input channel).

Initialisers follow PyTorch: v ~ U(+-1/sqrt(fan_in)), g = ||v|| (what `weight_norm` sets
at construction), Snake alpha = 1.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.layers.common import CONV_IN, CONV_K, CONV_OUT, NORM, constant, param, torch_uniform

_DN = ("NWC", "WIO", "NWC")
_HIGHEST = jax.lax.Precision.HIGHEST  # float32 parity (model.md §0)


def _norm_init(v: jax.Array, axes: tuple[int, ...]):
    """Init of g: ||v|| over `axes` (torch weight_norm sets g from the initial weight)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes)).reshape(shape).astype(dtype)

    return init


def weight_norm(v: jax.Array, g: jax.Array, axes: tuple[int, ...], g_axis: int) -> jax.Array:
    """w = v * (g / ||v||) with the norm over `axes`; g [C] broadcast along `g_axis`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
    shape = [1] * v.ndim
    shape[g_axis] = -1
    return v * (g.reshape(shape) / norm)


def conv1d(x, kernel, bias, *, stride=1, padding=0, dilation=1):
    """Zero-padded cross-correlation: x [B, L, in], kernel [k, in, out] -> [B, L', out]."""
    y = jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                     rhs_dilation=(dilation,), dimension_numbers=_DN,
                                     precision=_HIGHEST)
    return y + bias


class WNConv1d(nn.Module):
    """Weight-normed Conv1d, symmetric zero padding: [B, L, in] -> [B, L', features]."""

    features: int
    kernel_size: int
    dilation: int = 1
    padding: int | None = None  # default: "same" for odd kernels, d * (k - 1) / 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin, k = x.shape[-1], self.kernel_size
        init = torch_uniform(cin * k)
        v = param(self, "weight_v", init, (k, cin, self.features), (CONV_K, CONV_IN, CONV_OUT))
        g = param(self, "weight_g", _norm_init(v, (0, 1)), (self.features,), (CONV_OUT,))
        b = param(self, "bias", init, (self.features,), (CONV_OUT,))
        pad = self.dilation * (k - 1) // 2 if self.padding is None else self.padding
        return conv1d(x, weight_norm(v, g, (0, 1), 2), b, padding=pad, dilation=self.dilation)


class WNConvTranspose1d(nn.Module):
    """Weight-normed ConvTranspose1d: [B, L, in] -> [B, s*(L-1) - 2p + k, features]."""

    features: int
    kernel_size: int
    stride: int
    padding: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin, k = x.shape[-1], self.kernel_size
        init = torch_uniform(self.features * k)  # torch fan_in of [in, out, k] is out * k
        v = param(self, "weight_v", init, (k, cin, self.features), (CONV_K, CONV_IN, CONV_OUT))
        g = param(self, "weight_g", _norm_init(v, (0, 2)), (cin,), (CONV_IN,))
        b = param(self, "bias", init, (self.features,), (CONV_OUT,))
        w = weight_norm(v, g, (0, 2), 1)[::-1]  # tap j of the scatter-add = flipped correlation
        edge = k - 1 - self.padding
        y = jax.lax.conv_general_dilated(x, w, (1,), [(edge, edge)], lhs_dilation=(self.stride,),
                                         dimension_numbers=_DN, precision=_HIGHEST)
        return y + b


class Conv1d(nn.Module):
    """Plain Conv1d (source_downs): [B, L, in] -> [B, floor((L + 2p - k)/s) + 1, features]."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin, k = x.shape[-1], self.kernel_size
        init = torch_uniform(cin * k)
        w = param(self, "kernel", init, (k, cin, self.features), (CONV_K, CONV_IN, CONV_OUT))
        b = param(self, "bias", init, (self.features,), (CONV_OUT,))
        return conv1d(x, w, b, stride=self.stride, padding=self.padding)


class Linear(nn.Module):
    """torch.nn.Linear with a Dense kernel [in, out]: [..., in] -> [..., features]."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = torch_uniform(x.shape[-1])
        w = param(self, "kernel", init, (x.shape[-1], self.features), (CONV_IN, CONV_OUT))
        b = param(self, "bias", init, (self.features,), (CONV_OUT,))
        return jnp.matmul(x, w, precision=_HIGHEST) + b


# Cody-Waite split of pi/2 (8 + 11 + 24 bits: n * _PIO2_A is exact for |n| < 2^16) and the
# Cephes sinf / cosf minimax polynomials on [-pi/4, pi/4].
_PIO2_A, _PIO2_B, _PIO2_C = 1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8
_SIN_P = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS_P = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def sin_squared(y: jax.Array) -> jax.Array:
    """sin(y)^2 in float32 from elementwise arithmetic only (any shape).

    Why: XLA:CPU evaluates `jnp.sin` element by element (~8 ns/element here), and the
    Snake activations of the full HiFT take ~170 M of them per 10 s (a quarter of the whole
    vocoder's CPU time). This form fuses into the surrounding loop and vectorises.
    y = n pi/2 + r with |r| <= pi/4, so sin(y)^2 = sin(r)^2 for even n and cos(r)^2 for
    odd n (no sign handling). Max error vs the float64 value: 1.2e-7 absolute for
    |y| < 1e4 (tests/test_fast_math.py); NaN/inf give NaN like sin.
    """
    y = y.astype(jnp.float32)
    n = jnp.round(y * jnp.float32(2.0 / 3.141592653589793))
    r = ((y - n * jnp.float32(_PIO2_A)) - n * jnp.float32(_PIO2_B)) - n * jnp.float32(_PIO2_C)
    z = r * r
    s = r + r * z * ((_SIN_P[0] * z + _SIN_P[1]) * z + _SIN_P[2])
    c = 1.0 - 0.5 * z + z * z * ((_COS_P[0] * z + _COS_P[1]) * z + _COS_P[2])
    odd = (n - 2.0 * jnp.floor(0.5 * n)) != 0.0
    t = jnp.where(odd, c, s)
    return t * t


class Snake(nn.Module):
    """x + sin^2(alpha x) / (alpha + eps), alpha [C] on a linear scale (init 1)."""

    eps: float = 1e-9

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = param(self, "alpha", constant(1.0), (x.shape[-1],), (NORM,))
        return x + (1.0 / (alpha + self.eps)) * sin_squared(x * alpha)


class ResBlock(nn.Module):
    """HiFT ResBlock: for each dilation d, x += conv2(snake2(conv1_d(snake1(x)))).

    x [B, L, C] -> [B, L, C]. Children `convs1_i`, `convs2_i`, `activations1_i`,
    `activations2_i` mirror the official `convs1.i` etc.
    """

    kernel_size: int
    dilations: Sequence[int] = (1, 3, 5)
    snake_eps: float = 1e-9

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        for i, d in enumerate(self.dilations):
            t = Snake(self.snake_eps, name=f"activations1_{i}")(x)
            t = WNConv1d(c, self.kernel_size, dilation=d, name=f"convs1_{i}")(t)
            t = Snake(self.snake_eps, name=f"activations2_{i}")(t)
            t = WNConv1d(c, self.kernel_size, name=f"convs2_{i}")(t)
            x = x + t
        return x


class F0Predictor(nn.Module):
    """ConvRNNF0Predictor (no RNN): n x (WNConv1d k3 -> ELU), Linear -> 1, abs.

    mel [B, T, in] -> f0 [B, T] in Hz, >= 0. Children `condnet_{0,2,4,6,8}` (the official
    Sequential indices) and `classifier`.
    """

    cond_channels: int = 512
    num_layers: int = 5

    @nn.compact
    def __call__(self, mel: jax.Array) -> jax.Array:
        x = mel
        for i in range(self.num_layers):
            x = nn.elu(WNConv1d(self.cond_channels, 3, name=f"condnet_{2 * i}")(x))
        return jnp.abs(Linear(1, name="classifier")(x)[..., 0])
