"""A 1-D VALID convolution whose gradients are per-tap matmuls (channels-last).

Forward: `lax.conv_general_dilated`, unchanged. Backward: XLA:CPU lowers the kernel
gradient of a channels-last conv1d to a convolution whose window is the whole time axis,
which ran at ~1 GFLOP/s (1.9 s for the [7, 512, 256] kernel of the 86 Hz SEANet decoder's
first layer at batch 4 x 260 frames, a third of the whole train step). Here both gradients
are K matmuls on [B*T', C] rows, the shape XLA:CPU's dot kernels are fast at:

    dW[j] = sum_{b,t} x[b, j*d + t*s]^T g[b, t]        ([C_in, B*T'] @ [B*T', C_out])
    dx[b, j*d + t*s] += g[b, t] @ W[j]^T               (then placed at stride s, offset j*d)

Same values as the conv gradients up to float32 summation order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NWC", "WIO", "NWC")  # activations [B, L, C], kernels [k, in, out]


# Outputs per call up to which the forward is one matmul over gathered taps (im2col):
# streaming steps emit 1-4 frames, where XLA:CPU's conv ran at ~9 GB/s of weight bytes and
# the [B*n, k*C_in] @ [k*C_in, C_out] dot at memory bandwidth (bench/NOTES.md section 5).
IM2COL_MAX_OUT = 4


def _conv(x, w, stride: int, dilation: int):
    k, c_in, c_out = w.shape
    n_out = (x.shape[1] - (k - 1) * dilation - 1) // stride + 1
    if 0 < n_out <= IM2COL_MAX_OUT:
        taps = jnp.stack([_tap(x, j, n_out, stride, dilation) for j in range(k)], axis=2)
        y = taps.reshape(-1, k * c_in) @ w.reshape(k * c_in, c_out)
        return y.reshape(x.shape[0], n_out, c_out)
    return lax.conv_general_dilated(x, w, window_strides=(stride,), padding="VALID",
                                    rhs_dilation=(dilation,),
                                    dimension_numbers=DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv1d_valid(x, w, stride: int = 1, dilation: int = 1):
    """x [B, L, C_in], w [K, C_in, C_out] -> [B, (L - k_eff) // stride + 1, C_out]."""
    return _conv(x, w, stride, dilation)


def _fwd(x, w, stride, dilation):
    return _conv(x, w, stride, dilation), (x, w)


def _tap(x, j: int, n_out: int, stride: int, dilation: int):
    """Input rows that tap j reads for outputs 0..n_out-1: [B, n_out, C_in]."""
    start = j * dilation
    return lax.slice_in_dim(x, start, start + (n_out - 1) * stride + 1, stride, axis=1)


def _bwd(stride, dilation, res, g):
    x, w = res
    b, length, c_in = x.shape
    k, _, c_out = w.shape
    n_out = g.shape[1]
    g2 = g.reshape(b * n_out, c_out)
    dw = jnp.stack([_tap(x, j, n_out, stride, dilation).reshape(b * n_out, c_in).T @ g2
                    for j in range(k)]).astype(w.dtype)
    span = (n_out - 1) * stride + 1
    dx = jnp.zeros_like(x)
    for j in range(k):
        rows = (g2 @ w[j].T).reshape(b, n_out, c_in)
        if stride > 1:  # rows go to every stride-th input frame
            rows = jnp.pad(rows[:, :, None], ((0, 0), (0, 0), (0, stride - 1), (0, 0)))
            rows = rows.reshape(b, n_out * stride, c_in)[:, :span]
        start = j * dilation
        dx = dx + jnp.pad(rows, ((0, 0), (start, length - start - span), (0, 0))).astype(x.dtype)
    return dx, dw


conv1d_valid.defvjp(_fwd, _bwd)
