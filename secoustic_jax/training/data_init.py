"""Data-dependent initialisation of a fresh codec (docs/training.md "Initialisation").

Raw log-mel (mean ~ -5.5, per-bin variance ~ 5) feeds the SEANet encoder directly, and the
decoder must emit it. With PyTorch's default init the first conv's outputs start far in
ELU's flat region and the decoder starts ~35 (MSE) away from the data. Instead of a
normalisation layer, which the official network does not have (and which would not fold
exactly into a causal conv with zero padding), the *initial values* of two layers absorb
the per-bin statistics:

- encoder first conv: W'[k, c, o] = W[k, c, o] / s_c, b'_o = b_o - sum_{k,c} W[k,c,o] m_c / s_c,
  so at init it sees (x - m) / s (exactly, away from the left zero padding);
- decoder last conv: W'[k, c, o] = W[k, c, o] * s_o, b'_o = b_o * s_o + m_o, so at init it
  emits m + s * (its default output).

Both VAE log-variance heads (semantic `dense_var` and paralinguistic `dense_var`) can
start at a chosen bias, so the samples are not mostly noise at step 0 (sigma = 1 against
|mu| ~ 0.3 with the default init).

These are parameter values only: the network, its forward and the official export are
unchanged, so every checkpoint still exports exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.layers.seanet import decoder_plan, encoder_plan
from secoustic_jax.training import pca_init

MIN_STD = 1e-2  # per-bin floor: a constant bin (e.g. always at the log floor) is not scaled up


def mel_statistics(batches) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-bin mean and std over the valid frames of host batches (dicts with "mel"
    [B, T, C] and "mel_mask" [B, T]). -> (mean [C], std [C] >= MIN_STD, frame count).

    Accumulated in float64, so the result does not depend on how frames split into batches
    beyond rounding.
    """
    total = s1 = s2 = 0
    for b in batches:
        mel = np.asarray(b["mel"], np.float64)
        m = np.asarray(b["mel_mask"], np.float64)[..., None]
        if not np.all(np.isfinite(mel[m[..., 0] > 0])):
            raise ValueError("mel_statistics: non-finite mel values in a training batch")
        total += float(m.sum())
        s1 = s1 + np.sum(mel * m, axis=(0, 1))
        s2 = s2 + np.sum(np.square(mel) * m, axis=(0, 1))
    if total < 2:
        raise ValueError("mel_statistics: no valid frames in the batches")
    mean = s1 / total
    var = np.maximum(s2 / total - np.square(mean), 0.0)
    return mean, np.maximum(np.sqrt(var), MIN_STD), int(total)


def _conv_names(config: ExperimentConfig) -> tuple[str, str]:
    seanet = config.codec.seanet
    return encoder_plan(seanet)[0].name, decoder_plan(seanet)[-1].name


def apply_init(params, config: ExperimentConfig, mean=None, std=None, pca=None):
    """-> params with the data-dependent first/last convs (when mean/std are given), the
    PCA trunk (when `pca` = (mean, basis, scale, shift) of pca_init is given) and the
    log-variance biases of config.init. Pure and jit-able; leaves the rest untouched."""
    codec = dict(params["codec"])
    if pca is not None:
        if "encoder" not in codec or "decoder" not in codec:
            raise ValueError("init.seanet_pca: the codec has no SEANet encoder/decoder (a "
                             "modified codec?); set init.seanet_pca=false")
        codec = pca_init.apply_pca_trunk(codec, config.codec.seanet, *pca)
    if mean is not None:
        first, last = _conv_names(config)
        if first not in codec.get("encoder", {}) or last not in codec.get("decoder", {}):
            raise ValueError(f"init.mel_stats: the codec has no encoder/{first} and decoder/"
                             f"{last} convs (a modified codec?); set "
                             "init.mel_stats=false")
        mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
        enc = dict(codec["encoder"])
        w, b = enc[first]["kernel"], enc[first]["bias"]
        w_new = w / std[None, :, None].astype(w.dtype)
        b_new = b - jnp.einsum("kco,c->o", w_new.astype(jnp.float32), mean).astype(b.dtype)
        enc[first] = dict(enc[first], kernel=w_new, bias=b_new)
        dec = dict(codec["decoder"])
        w, b = dec[last]["kernel"], dec[last]["bias"]
        dec[last] = dict(dec[last], kernel=w * std[None, None, :].astype(w.dtype),
                         bias=(b * std + mean).astype(b.dtype))
        codec["encoder"], codec["decoder"] = enc, dec
    bias = config.init.logvar_bias
    if bias is not None:
        for module in ("vae_semantic_transformer", "paralinguistic_encoder"):
            sub = dict(codec.get(module, {}))
            if "dense_var" not in sub:
                raise ValueError(f"init.logvar_bias: the codec has no {module}/dense_var head "
                                 "(a modified codec?); set "
                                 "init.logvar_bias=null")
            head = dict(sub["dense_var"])
            head["bias"] = jnp.full_like(head["bias"], bias)
            sub["dense_var"] = head
            codec[module] = sub
    return dict(params, codec=codec)


def global_statistics(local_batches, process_count: int):
    """mel_statistics over every host's batches (each host passes its own shard's)."""
    mean, std, n = mel_statistics(local_batches)
    if process_count == 1:
        return mean, std
    # Recombine the first two moments weighted by each host's frame count.
    var = np.square(std)
    local = np.concatenate([[n], mean * n, (var + np.square(mean)) * n])
    tot = np.sum(np.asarray(multihost_utils.process_allgather(local)), axis=0)
    g_mean = tot[1:1 + mean.size] / tot[0]
    g_var = np.maximum(tot[1 + mean.size:] / tot[0] - np.square(g_mean), 0.0)
    return g_mean, np.maximum(np.sqrt(g_var), MIN_STD)


def global_pca(local_batches, config: ExperimentConfig, process_count: int):
    """(mean, basis, scale, shift) of the PCA trunk over every host's statistics batches."""
    pca_init.check_geometry(config.codec.seanet)
    n, s1, s2 = pca_init.frame_moments(local_batches)
    if process_count > 1:
        local = np.concatenate([[n], s1, s2.ravel()])
        tot = np.sum(np.asarray(multihost_utils.process_allgather(local)), axis=0)
        n, s1, s2 = tot[0], tot[1:1 + s1.size], tot[1 + s1.size:].reshape(s2.shape)
    mean, basis, scale = pca_init.pca_basis(n, s1, s2, pca_init.trunk_width(config.codec.seanet))
    shift = pca_init.trunk_shift(local_batches, mean, basis, scale)
    if process_count > 1:  # the same offsets everywhere: the largest host's, per channel
        shift = np.max(np.asarray(multihost_utils.process_allgather(shift)), axis=0)
    return mean, basis, scale, shift


def data_dependent_init(params, config: ExperimentConfig, batches, *, param_shardings,
                        process_count: int = 1):
    """Fresh params -> initialised params (same shardings). `batches`: an iterable of host
    training batches, of which config.init.stats_batches are read."""
    mean = std = pca = None
    if config.init.mel_stats or config.init.seanet_pca:
        taken = []
        for _, b in zip(range(config.init.stats_batches), batches):
            taken.append(b)
        if config.init.mel_stats:
            mean, std = global_statistics(taken, process_count)
        else:
            pca = global_pca(taken, config, process_count)
    if mean is None and pca is None and config.init.logvar_bias is None:
        return params
    # None arguments are empty pytrees: one jitted function serves every combination.
    fn = jax.jit(lambda p, m, s, pc: apply_init(p, config, m, s, pc), out_shardings=param_shardings)
    return fn(params, mean, std, pca)
