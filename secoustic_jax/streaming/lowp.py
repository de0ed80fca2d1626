"""Narrow transformer weights with float32 accumulation for the streaming steps (issue 6).

At one token per step the step is a chain of matrix-vector products, so its floor is the
weight bytes read per step (~300 MB float32 at full size). Two opt-in weight formats for
the four transformer stacks:

- `bf16_weights`: bfloat16 kernels (half the bytes; rounding 2^-9 relative per weight);
- `int8_weights`: int8 kernels with one float32 scale per output column,
  q = round(w / s), s = max|w[:, n]| / 127 (a quarter of the bytes; error up to s / 2
  per weight), stored as `kernel` (int8) and a sibling `kernel_scale` [N].

Both take `stacks`: with DECODER_STACKS only the stacks after the tokens are narrowed, so
the tokens stay exactly those of the float32 stream (narrowing the encoder side changed
0.4 % (bf16) and 1.3 % (int8) of a trained tiny model's tokens; docs/streaming.md).

`narrow_matvec()` is a `flax.linen.intercept_methods` interceptor that sends every
`nn.Dense` holding such a kernel to `ops.narrow_matvec` (float32 accumulation; on CPU,
custom calls that widen the weights in registers: XLA:CPU's own bf16 dot is ~10x slower
than its float32 dot at M = 1). Activations, LayerNorm, attention, SEANet and FSQ (project_in,
bound, rounding) stay float32: only transformer kernels are narrowed, `fsq` never.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax import ops

STACKS = ("encoder_transformer", "vae_semantic_transformer", "semantic_connector",
          "decoder_transformer")
# The stacks after the tokens: narrowing only these keeps the tokens those of float32.
DECODER_STACKS = ("semantic_connector", "decoder_transformer")
NARROW = (jnp.bfloat16, jnp.int8)  # kernel dtypes the interceptor routes to the kernels


def _is_stack_kernel(path, x) -> bool:
    name = jax.tree_util.keystr(path)
    return name.endswith("['kernel']") and x.ndim >= 2 and not name.startswith("['dense_")


def _check_stacks(stacks) -> tuple:
    stacks = tuple(stacks)
    if not stacks or any(s not in STACKS for s in stacks):
        raise ValueError(f"stacks must be a non-empty subset of {STACKS}, got {stacks}")
    return stacks


def bf16_weights(variables: dict, stacks=STACKS) -> dict:
    """Copy of {"params": ...} with every >= 2-D kernel of `stacks` in bf16 (LayerNorm,
    LayerScale, biases, SEANet and FSQ stay float32)."""
    params = dict(variables["params"])
    for name in _check_stacks(stacks):
        params[name] = jax.tree_util.tree_map_with_path(
            lambda p, x: x.astype(jnp.bfloat16) if _is_stack_kernel(p, x) else x,
            params[name])
    return {**variables, "params": params}


def quantize_int8(w) -> tuple[jnp.ndarray, jnp.ndarray]:
    """w [K, N] -> (q int8 [K, N], scale f32 [N]) with w ~ q * scale, per output column.

    An all-zero column gets scale 1 (q = 0 there), so no scale is 0 or NaN.
    """
    w = jnp.asarray(w, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(w))):
        raise ValueError("int8_weights: a transformer kernel holds non-finite values")
    peak = jnp.max(jnp.abs(w), axis=0)
    scale = jnp.where(peak > 0, peak / 127.0, 1.0).astype(jnp.float32)
    q = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
    return q, scale


def dequantize_int8(q, scale) -> jnp.ndarray:
    """The float32 weights an int8 kernel stands for (the offline reference of a test)."""
    return q.astype(jnp.float32) * scale


def _int8_tree(tree):
    """A stack's param dict with each kernel replaced by int8 + `kernel_scale`."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out[key] = _int8_tree(value)
        elif key == "kernel" and value.ndim == 2:
            out["kernel"], out["kernel_scale"] = quantize_int8(value)
        else:
            out[key] = value
    return out


def int8_weights(variables: dict, stacks=STACKS) -> dict:
    """Copy of {"params": ...} with every 2-D kernel of `stacks` as int8 plus a per-column
    float32 `kernel_scale` (everything else as in `bf16_weights`)."""
    params = dict(variables["params"])
    for name in _check_stacks(stacks):
        top = dict(params[name])
        for key, sub in top.items():
            if not key.startswith("dense_") and isinstance(sub, dict):
                top[key] = _int8_tree(sub)
        params[name] = top
    return {**variables, "params": params}


def _dense_interceptor(dtypes, product):
    """An interceptor replacing every `nn.Dense` whose kernel dtype is in `dtypes` by
    product(module, x, kernel) (float32) plus the bias, in the module's output dtype."""
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dense) and context.method_name == "__call__":
            kernel = module.get_variable("params", "kernel")
            if kernel is not None and kernel.dtype in dtypes:
                y = product(module, args[0], kernel)
                if module.use_bias:
                    y = y + module.get_variable("params", "bias").astype(jnp.float32)
                return y.astype(module.dtype or jnp.float32)
        return next_fun(*args, **kwargs)

    return intercept


def _matvec_product(module, x, kernel):
    """Float32 activations times the narrow kernel (`ops.narrow_matvec`: custom calls on
    CPU, XLA's own narrow dots elsewhere)."""
    scale = module.get_variable("params", "kernel_scale") if kernel.dtype == jnp.int8 else None
    return ops.narrow_matvec(x, kernel, scale)


def _bf16_dot_product(module, x, kernel):
    del module
    return jax.lax.dot_general(x.astype(jnp.bfloat16), kernel, (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


_intercept = _dense_interceptor(NARROW, _matvec_product)
_intercept_offline = _dense_interceptor((jnp.bfloat16,), _bf16_dot_product)


def narrow_matvec():
    """Context manager for use inside a traced step (see codec_steps `_apply`)."""
    return nn.intercept_methods(_intercept)


def bf16_dots():
    """Offline counterpart of `narrow_matvec` (the api's matmul_dtype="bfloat16"): every
    `nn.Dense` holding a bf16 kernel multiplies bf16-rounded activations by it with
    float32 accumulation, in XLA (on AVX512_BF16 CPUs ~2x its float32 dot rate at offline
    shapes: 86 Hz layer matmuls 8.7 vs 19.6 ms at T = 861). Unlike the streaming kernels,
    the activations are rounded too. Use inside a traced function."""
    return nn.intercept_methods(_intercept_offline)


def has_narrow_weights(variables) -> bool:
    return any(x.dtype in NARROW for x in jax.tree.leaves(variables))
