"""The PCA-trunk initialisation (training/pca_init.py, init.seanet_pca): at init the SEANet
autoencoder is exactly the rank-k PCA autoencoder of the statistics frames, the side
channels still carry random features, the ELUs never cut the trunk, and export is exact."""

import dataclasses

import jax
import numpy as np
import pytest

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import InitConfig, load_experiment
from secoustic_jax.training import data_init, pca_init

CFG = load_experiment("configs/tiny.py")


def _mel_batches(rng, n=4, frames=96):
    """Correlated, low-rank-plus-noise mel-like frames (mean ~ -5.5, a few strong
    directions), with a padded tail that must not enter the statistics."""
    mix = rng.normal(0, 1, (12, 80)) * np.linspace(3, 0.3, 12)[:, None]
    out = []
    for _ in range(n):
        mel = -5.5 + rng.normal(0, 1, (2, frames, 12)) @ mix + 0.1 * rng.normal(0, 1, (2, frames, 80))
        mask = np.ones((2, frames))
        mask[1, frames - 10:] = 0
        mel[1, frames - 10:] = 1e6
        out.append({"mel": mel.astype(np.float32), "mel_mask": mask})
    return out


def _pca_setup(rng, n_filters=16, layer_scale=None):
    from secoustic_jax.api import Codec

    codec_cfg = codec_preset("tiny", {"seanet.n_filters": n_filters})
    cfg = dataclasses.replace(CFG, codec=codec_cfg, init=InitConfig(seanet_pca=True))
    variables = Codec.init(codec_cfg, seed=5).variables
    batches = _mel_batches(rng)
    mean, basis, scale, shift = data_init.global_pca(batches, cfg, 1)
    params = data_init.apply_init({"codec": variables["params"]}, cfg,
                                  pca=(mean, basis, scale, shift))["codec"]
    if layer_scale is not None:  # isolate the SEANet: transformers exactly identity
        params = jax.tree_util.tree_map_with_path(
            lambda p, a: np.full_like(a, layer_scale) if "layer_scale" in jax.tree_util.keystr(p) else a,
            params)
    return codec_cfg, variables, params, batches, (mean, basis, scale, shift)


def _reconstruct(codec_cfg, variables, params, mel):
    from secoustic_jax.model.codec import SecoustiCodec

    net = SecoustiCodec(codec_cfg)
    v = dict(variables, params=params)
    enc = net.apply(v, mel, method=SecoustiCodec.encode)
    return enc, net.apply(v, enc.acoustic, method=SecoustiCodec.decode_acoustic)


def test_statistics_use_valid_frames_only(rng):
    batches = _mel_batches(rng)
    n, s1, s2 = pca_init.frame_moments(batches)
    frames = np.concatenate([b["mel"][b["mel_mask"] > 0] for b in batches]).astype(np.float64)
    assert n == frames.shape[0]
    np.testing.assert_allclose(s1 / n, frames.mean(0), rtol=1e-12)  # float64 both ways
    mean, basis, scale = pca_init.pca_basis(n, s1, s2, 8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-10)  # orthonormal (eigh)
    coords = (frames - mean) @ basis
    np.testing.assert_allclose(scale, np.sqrt(np.mean(coords.var(0))), rtol=1e-8)  # float64
    bad = {"mel": batches[0]["mel"].copy(), "mel_mask": batches[0]["mel_mask"]}
    bad["mel"][0, 3, 5] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        pca_init.frame_moments([bad])
    with pytest.raises(ValueError, match="no valid frames"):
        pca_init.frame_moments([{"mel": bad["mel"], "mel_mask": np.zeros((2, 96))}])


def test_init_is_the_rank_k_pca_autoencoder(rng):
    codec_cfg, variables, params, batches, (mean, basis, scale, shift) = _pca_setup(rng, layer_scale=0.0)
    k = pca_init.trunk_width(codec_cfg.seanet)
    assert k == 16 and basis.shape == (80, k)
    mel = batches[0]["mel"][:1, :80]
    enc, rec = _reconstruct(codec_cfg, variables, params, mel)
    # z's trunk holds the PCA coordinates; every frame (the causal zero padding included:
    # only the current tap is non-zero in the trunk) is the rank-k reconstruction.
    coords = (mel[0].astype(np.float64) - mean) @ basis / scale
    np.testing.assert_allclose(np.asarray(enc.z[0, :, :k]), coords, atol=2e-5)  # float32 chain
    pca = coords @ basis.T * scale + mean
    np.testing.assert_allclose(np.asarray(rec[0]), pca, atol=2e-4)  # float32 through ~10 convs, |x| ~ 10
    # The ELUs really were on their identity side: the shift covers the trunk's range.
    assert np.all(shift > -coords.min(axis=0)) and shift.shape == (k,)


def test_side_channels_stay_random_and_trunk_reads_none_of_them(rng):
    codec_cfg, variables, params, _, _ = _pca_setup(rng, n_filters=16)
    k = pca_init.trunk_width(codec_cfg.seanet)
    old = variables["params"]
    # encoder layer_3 (16 -> 32): side outputs keep their random kernel, trunk outputs read
    # only the current tap of the trunk inputs, as the identity.
    w_old, w_new = old["encoder"]["layer_3"]["kernel"], params["encoder"]["layer_3"]["kernel"]
    np.testing.assert_array_equal(w_new[:, :, k:], w_old[:, :, k:])
    np.testing.assert_array_equal(w_new[-1, :k, :k], np.eye(k))
    assert not np.any(w_new[:-1, :, :k]) and not np.any(w_new[-1, k:, :k])
    # Residual branches start at zero, their first conv random.
    assert not np.any(params["decoder"]["layer_3"]["block_3"]["kernel"])
    np.testing.assert_array_equal(params["decoder"]["layer_3"]["block_1"]["kernel"],
                                  old["decoder"]["layer_3"]["block_1"]["kernel"])
    # Outside the SEANet stacks nothing moved.
    for module in old:
        if module not in ("encoder", "decoder"):
            jax.tree.map(np.testing.assert_array_equal, params[module], old[module])


def test_default_layer_scale_stays_close_to_pca(rng):
    codec_cfg, variables, params, batches, (mean, basis, scale, _) = _pca_setup(rng)
    mel = batches[1]["mel"][:1, :80]
    _, rec = _reconstruct(codec_cfg, variables, params, mel)
    x = mel[0].astype(np.float64)
    pca = ((x - mean) @ basis @ basis.T) + mean
    err_pca = np.mean((pca - x) ** 2)
    err = np.mean((np.asarray(rec[0]) - x) ** 2)
    # The transformers' LayerScale 0.01 branches add a little error; a random init is ~40.
    assert err < err_pca + 0.05 * np.var(x), (err, err_pca)


def test_strided_seanet_and_mel_stats_are_refused():
    cfg = dataclasses.replace(CFG, codec=codec_preset("tiny_21_5hz"), init=InitConfig(seanet_pca=True))
    with pytest.raises(ValueError, match="stride-1 SEANet.*ratios"):
        data_init.global_pca(_mel_batches(np.random.default_rng(0)), cfg, 1)
    with pytest.raises(ConfigError, match="seanet_pca.*mel_stats=false"):
        InitConfig(mel_stats=True, seanet_pca=True).validate()


def test_pca_initialised_weights_export_exactly(rng):
    from secoustic_jax.api import Codec

    codec_cfg, variables, params, batches, _ = _pca_setup(rng)
    codec = Codec(codec_cfg, dict(variables, params=params))
    back = Codec.from_state_dict(codec.torch_state_dict(), config=codec_cfg)
    mel = batches[2]["mel"][:1, :40]
    a, b = codec.encode_mel(mel), back.encode_mel(mel)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(codec.decode_acoustic(a.acoustic), back.decode_acoustic(b.acoustic))


def test_a_codec_without_seanet_is_refused_by_name(rng):
    cfg = dataclasses.replace(CFG, init=InitConfig(seanet_pca=True))
    params = {"codec": {"encoder_transformer": {}}}
    pca = data_init.global_pca(_mel_batches(rng), cfg, 1)
    with pytest.raises(ValueError, match="no SEANet encoder/decoder.*seanet_pca=false"):
        data_init.apply_init(params, cfg, pca=pca)


def test_data_dependent_init_reads_the_configured_batches(rng):
    from secoustic_jax.api import Codec

    codec_cfg = codec_preset("tiny", {"seanet.n_filters": 16})
    cfg = dataclasses.replace(CFG, codec=codec_cfg,
                              init=InitConfig(seanet_pca=True, stats_batches=2, logvar_bias=-5.0))
    params = {"codec": Codec.init(codec_cfg, seed=5).variables["params"]}
    batches = _mel_batches(rng, n=4)
    out = data_init.data_dependent_init(params, cfg, iter(batches), param_shardings=None)
    # Only the first stats_batches batches: the same as an explicit PCA over those two.
    want = data_init.apply_init(params, cfg, pca=data_init.global_pca(batches[:2], cfg, 1))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), out, want)  # jit vs eager float32 sums, values up to ~100
    assert np.all(np.asarray(out["codec"]["vae_semantic_transformer"]["dense_var"]["bias"]) == -5.0)
