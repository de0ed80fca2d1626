"""The SEANet autoencoder starts as the mel's PCA autoencoder (`init.seanet_pca`).

Why: with random weights the stage-1 autoencoder learns the mel's principal directions one
after another and, on 2 CPU cores, spends its whole budget near the error of a 16-component
PCA (tiny: valid mel MSE 0.17-0.20 after 13-17k steps, PCA-16 0.19, PCA-32 0.07, PCA-64
0.007 on the demo corpus; docs/training.md). The linear optimum is known in closed form, so
the network can start there and train only what a linear map cannot do.

The construction (stride-1 SEANet, i.e. the 86 Hz geometry; k = min(n_filters, dimension,
channels) "trunk" channels, the first k of every activation):

- encoder first conv: trunk output u = V_k^T (x - m) / scale + shift at its current tap
  (V_k the top-k principal directions of the mel frames, m their mean, scale the top
  component's std, shift [k] per-channel offsets that keep every trunk value of the
  statistics batches on ELU's identity side, so the ELUs between the convs pass the trunk unchanged);
- every later conv: the trunk is copied (identity at the current tap, nothing from the
  other taps or from the side channels); the encoder's last conv removes the shift, so
  z[..., :k] = V_k^T (x - m) / scale, and the decoder's first conv adds it back;
- decoder last conv: x-hat = m + scale V_k (u - shift): D(E(x)) is the rank-k PCA
  reconstruction of each frame, up to what the transformers add (LayerScale 0.01);
- ResBlocks: the second conv of the residual branch starts at zero (identity blocks; the
  branch trains from the first step, as in ReZero/Fixup);
- side channels (beyond k) keep their random weights, recentred so the trunk's offset does
  not bias them; what they feed into the trunk starts at zero. They are the nonlinear
  capacity the training adds on top of the linear optimum.

Everything here is a parameter value: the network, its forward pass and the official
export are unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from secoustic_jax.config.model import SEANetConfig
from secoustic_jax.layers.seanet import LayerSpec, decoder_plan, encoder_plan

SHIFT_MARGIN = 1.25  # shift_i = margin x the most negative value of trunk channel i (>= margin)


def trunk_width(cfg: SEANetConfig) -> int:
    """k: the channels every SEANet activation can spare for the linear trunk."""
    return min(cfg.n_filters, cfg.dimension, cfg.channels)


def check_geometry(cfg: SEANetConfig) -> None:
    """The trunk copies frame t to frame t: only stride-1 SEANets (86 Hz) qualify."""
    if cfg.hop != 1:
        raise ValueError(f"init.seanet_pca needs a stride-1 SEANet (86 Hz geometry); this one "
                         f"has ratios {cfg.ratios} (hop {cfg.hop}). Use init.mel_stats instead.")


def frame_moments(batches) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, sum [C], sum of outer products [C, C]) of the valid mel frames, float64."""
    n, s1, s2 = 0, 0.0, 0.0
    for b in batches:
        mel = np.asarray(b["mel"], np.float64)
        x = mel[np.asarray(b["mel_mask"]) > 0]
        if not np.all(np.isfinite(x)):
            raise ValueError("init.seanet_pca: non-finite mel values in a training batch")
        n += x.shape[0]
        s1 = s1 + x.sum(0)
        s2 = s2 + x.T @ x
    if n < 2:
        raise ValueError("init.seanet_pca: no valid frames in the statistics batches")
    return n, np.asarray(s1), np.asarray(s2)


def pca_basis(n: int, s1: np.ndarray, s2: np.ndarray, k: int):
    """-> (mean [C], basis V_k [C, k] float64, scale = RMS std of the k components).

    The scale gives the trunk coordinates unit mean square (a randomly initialised stage 1
    ends near 0.2 per dimension of A, so L_ac keeps an O(1) weight against L_con), and a
    trunk perturbation costs `scale` mel units, not the top component's std (~5x more),
    which the first Adam steps turn into a large jump in the loss (docs/training.md, PCA
    A/B: pca vs pcaR)."""
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(w)[::-1][:k]
    # A deterministic sign per direction (largest entry positive): the init then does not
    # depend on the eigensolver's sign convention.
    basis = v[:, order]
    basis = basis * np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(k)])
    return mean, basis, float(np.sqrt(max(np.mean(w[order]), 1e-12)))


def trunk_shift(batches, mean, basis, scale) -> np.ndarray:
    """Per trunk channel [k], the offset that puts every value of the statistics frames
    above ELU's knee. Per channel, not one constant: every conv that reads a trunk channel
    sees its offset as a constant input, so a weight step there moves the output by
    (step x offset); small components keep small offsets."""
    lowest = np.zeros(basis.shape[1])
    for b in batches:
        x = np.asarray(b["mel"], np.float64)[np.asarray(b["mel_mask"]) > 0]
        if x.size:
            lowest = np.minimum(lowest, ((x - mean) @ basis / scale).min(axis=0))
    return SHIFT_MARGIN * np.maximum(-lowest, 1.0)


def _set_conv(p: dict, spec: LayerSpec, trunk_map, in_shift, out_shift) -> dict:
    """Trunk outputs [:k_out] = trunk_map applied to the trunk inputs at the current tap, with
    bias out_shift - in_shift @ trunk_map; side outputs recentred for in_shift.

    trunk_map [k_in, k_out] (k or all mel bins on each side); in_shift [k_in] and
    out_shift [k_out] are the offsets the trunk carries in and out.
    """
    kernel, bias = p["kernel"], p["bias"]
    k_in, k_out = trunk_map.shape
    tap = 0 if spec.kind == "convtr" else spec.kernel - 1  # the tap that reads frame t
    w32 = kernel.astype(jnp.float32)
    side_offset = jnp.einsum("c,jco->o", in_shift, w32[:, :k_in, :])
    new_bias = (bias.astype(jnp.float32) - side_offset).at[:k_out].set(out_shift - in_shift @ trunk_map)
    w32 = w32.at[:, :, :k_out].set(0.0).at[tap, :k_in, :k_out].set(trunk_map)
    return {"kernel": w32.astype(kernel.dtype), "bias": new_bias.astype(bias.dtype)}


def _zero_branch(p: dict, carried) -> dict:
    """A ResBlock whose residual branch starts at zero (its second conv), its first conv
    recentred for the trunk offsets `carried` [k] it reads (through the branch's ELU)."""
    block_3 = {name: jnp.zeros_like(a) for name, a in p["block_3"].items()}
    w, b = p["block_1"]["kernel"], p["block_1"]["bias"]
    k = carried.shape[0]
    offset = jnp.einsum("c,jco->o", carried, w[:, :k, :].astype(jnp.float32))
    block_1 = dict(p["block_1"], bias=(b.astype(jnp.float32) - offset).astype(b.dtype))
    return dict(p, block_1=block_1, block_3=block_3)


def _walk(params: dict, plan, first, last, carried) -> dict:
    """One SEANet stack: `first`/`last` = (trunk_map, in_shift, out_shift) of its end
    convs; every conv in between copies the trunk with its offsets `carried` [k]."""
    out = dict(params)
    convs = [s for s in plan if s.kind != "res"]
    eye = jnp.eye(carried.shape[0], dtype=jnp.float32)
    for spec in plan:
        if spec.kind == "res":
            out[spec.name] = _zero_branch(params[spec.name], carried)
            continue
        if spec is convs[0]:
            args = first
        elif spec is convs[-1]:
            args = last
        else:
            args = (eye, carried, carried)
        out[spec.name] = _set_conv(params[spec.name], spec, *args)
    return out


def apply_pca_trunk(codec: dict, cfg: SEANetConfig, mean, basis, scale, shift) -> dict:
    """codec params -> codec params whose SEANet encoder/decoder compute the rank-k PCA
    autoencoder through their trunk channels. mean [C], basis [C, k], shift [k]; jit-able."""
    check_geometry(cfg)
    k = trunk_width(cfg)
    mean = jnp.asarray(mean, jnp.float32)
    basis = jnp.asarray(basis, jnp.float32)
    carried = jnp.broadcast_to(jnp.asarray(shift, jnp.float32), (k,))
    zeros, eye = jnp.zeros((k,), jnp.float32), jnp.eye(k, dtype=jnp.float32)
    enc = _walk(codec["encoder"], encoder_plan(cfg),
                first=(basis / scale, mean, carried), last=(eye, carried, zeros), carried=carried)
    dec = _walk(codec["decoder"], decoder_plan(cfg),
                first=(eye, zeros, carried), last=(scale * basis.T, carried, mean), carried=carried)
    return dict(codec, encoder=enc, decoder=dec)
