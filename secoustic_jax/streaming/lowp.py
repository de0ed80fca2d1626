"""bfloat16 weights with float32 accumulation for small-batch streaming steps (issue 6).

At one token per step the step is a chain of matrix-vector products, so its floor is the
weight bytes read per step (~300 MB float32 at full size). `bf16_weights` halves them for
the four transformer stacks; `bf16_matvec()` is a `flax.linen.intercept_methods`
interceptor that makes every `nn.Dense` holding a bfloat16 kernel call the
`secoustic_jax.kernels.bf16_matvec` custom call (bf16 rows widened in registers, float32
accumulation; XLA:CPU's own bf16 dot is ~10x slower than its float32 dot at M = 1).
Activations, LayerNorm, attention, SEANet and FSQ (project_in, bound, rounding) stay
float32: only transformer kernels are cast, `fsq` never.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

STACKS = ("encoder_transformer", "vae_semantic_transformer", "semantic_connector",
          "decoder_transformer")


def bf16_weights(variables: dict) -> dict:
    """Copy of {"params": ...} with every >= 2-D kernel of the transformer stacks in bf16
    (LayerNorm, LayerScale, biases, SEANet and FSQ stay float32)."""
    params = dict(variables["params"])
    for name in STACKS:
        params[name] = jax.tree_util.tree_map_with_path(
            lambda p, x: x.astype(jnp.bfloat16)
            if jax.tree_util.keystr(p).endswith("['kernel']") and x.ndim >= 2
            and not jax.tree_util.keystr(p).startswith("['dense_") else x, params[name])
    return {**variables, "params": params}


def _intercept(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Dense) and context.method_name == "__call__":
        kernel = module.get_variable("params", "kernel")
        if kernel is not None and kernel.dtype == jnp.bfloat16:
            from secoustic_jax.kernels import bf16_matvec as matvec_kernel

            (x,) = args
            y = matvec_kernel(x.astype(jnp.float32), kernel)
            if module.use_bias:
                y = y + module.get_variable("params", "bias").astype(jnp.float32)
            return y.astype(module.dtype or jnp.float32)
    return next_fun(*args, **kwargs)


def bf16_matvec():
    """Context manager for use inside a traced step (see codec_steps `matvec` option)."""
    return nn.intercept_methods(_intercept)
