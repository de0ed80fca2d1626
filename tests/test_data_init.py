"""Data-dependent initialisation (training/data_init.py): statistics, the exact effect on the
first/last SEANet convs, the log-variance biases, and that export is untouched."""

import dataclasses

import jax
import numpy as np
import pytest

from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import InitConfig, load_experiment
from secoustic_jax.training import data_init

CFG = load_experiment("configs/tiny.py")


def _codec_params(cfg):
    from secoustic_jax.api import Codec

    return Codec.init(cfg, seed=3).variables


def _batches(rng, n=3):
    out = []
    for _ in range(n):
        mel = rng.normal(-5.0, 2.0, (2, 40, 80)) * np.linspace(0.5, 2, 80) + np.arange(80) * 0.01
        mask = np.ones((2, 40))
        mask[1, 30:] = 0
        mel[1, 30:] = 1e6  # padding: must not enter the statistics
        out.append({"mel": mel.astype(np.float32), "mel_mask": mask})
    return out


def test_statistics_are_over_valid_frames_only(rng):
    batches = _batches(rng)
    mean, std, n = data_init.mel_statistics(batches)
    frames = np.concatenate([b["mel"][b["mel_mask"] > 0] for b in batches]).astype(np.float64)
    assert n == frames.shape[0] == 3 * 70
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-12)  # float64 both ways
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-9)  # E[x^2]-m^2 vs two-pass, float64
    with pytest.raises(ValueError, match="no valid frames"):
        data_init.mel_statistics([{"mel": batches[0]["mel"], "mel_mask": np.zeros((2, 40))}])
    bad = {"mel": batches[0]["mel"].copy(), "mel_mask": batches[0]["mel_mask"]}
    bad["mel"][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        data_init.mel_statistics([bad])


@pytest.mark.parametrize("variant", ["tiny", "tiny_21_5hz"])
def test_first_and_last_convs_absorb_the_statistics(variant, rng):
    from secoustic_jax.layers.conv import CausalConv1d
    from secoustic_jax.model.codec import SecoustiCodec

    codec_cfg = codec_preset(variant)
    cfg = dataclasses.replace(CFG, codec=codec_cfg, init=InitConfig(mel_stats=True, logvar_bias=-4.0))
    variables = _codec_params(codec_cfg)
    mean = rng.normal(-5, 1, 80).astype(np.float32)
    std = rng.uniform(0.5, 3, 80).astype(np.float32)
    new = data_init.apply_init({"codec": variables["params"]}, cfg, mean, std)["codec"]
    first, last = data_init._conv_names(cfg)
    # Encoder first conv: raw x through the new weights == normalised x through the old,
    # on every frame whose receptive field is inside the input (the left zero padding is
    # the one place they differ).
    x = rng.normal(-5, 2, (2, 30, 80)).astype(np.float32)
    old_p, new_p = variables["params"]["encoder"][first], new["encoder"][first]
    k = old_p["kernel"].shape[0]
    conv = CausalConv1d(old_p["kernel"].shape[-1], k, 1, 1)
    y_new = conv.apply({"params": new_p}, x)
    y_old = conv.apply({"params": old_p}, (x - mean) / std)
    np.testing.assert_allclose(y_new[:, k - 1:], y_old[:, k - 1:], atol=2e-5)  # float32 sums of ~560 terms
    # Decoder: the whole decoder output becomes mean + std * (old output), every frame.
    a = rng.normal(0, 1, (2, 12, codec_cfg.transformer.d_model)).astype(np.float32)
    net = SecoustiCodec(codec_cfg)
    out_old = net.apply(variables, a, method=SecoustiCodec.decode_acoustic)
    out_new = net.apply(dict(variables, params=new), a, method=SecoustiCodec.decode_acoustic)
    np.testing.assert_allclose(out_new, mean + std * out_old, rtol=1e-5, atol=2e-5)  # float32 rounding
    for module in ("vae_semantic_transformer", "paralinguistic_encoder"):
        assert np.all(np.asarray(new[module]["dense_var"]["bias"]) == -4.0)
        np.testing.assert_array_equal(new[module]["dense_var"]["kernel"],
                                      variables["params"][module]["dense_var"]["kernel"])
    # Nothing else moved.
    flat_old = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    flat_new = dict(jax.tree_util.tree_flatten_with_path(new)[0])
    changed = {jax.tree_util.keystr(p) for p, v in flat_old
               if not np.array_equal(v, flat_new[p])}
    assert changed == {f"['encoder']['{first}']['kernel']", f"['encoder']['{first}']['bias']",
                       f"['decoder']['{last}']['kernel']", f"['decoder']['{last}']['bias']",
                       "['vae_semantic_transformer']['dense_var']['bias']",
                       "['paralinguistic_encoder']['dense_var']['bias']"}


def test_initialised_weights_export_exactly(rng):
    from secoustic_jax.api import Codec

    codec_cfg = codec_preset("tiny")
    cfg = dataclasses.replace(CFG, init=InitConfig(mel_stats=True, logvar_bias=-4.0))
    variables = _codec_params(codec_cfg)
    params = data_init.apply_init({"codec": variables["params"]}, cfg,
                                  rng.normal(-5, 1, 80), rng.uniform(0.5, 3, 80))["codec"]
    codec = Codec(codec_cfg, dict(variables, params=params))
    back = Codec.from_state_dict(codec.torch_state_dict(), config=codec_cfg)
    mel = rng.normal(-5, 2, (1, 40, 80)).astype(np.float32)
    a, b = codec.encode_mel(mel), back.encode_mel(mel)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(codec.decode_acoustic(a.acoustic), back.decode_acoustic(b.acoustic))


def test_default_config_changes_nothing():
    params = {"codec": _codec_params(codec_preset("tiny"))["params"]}
    cfg = dataclasses.replace(CFG, init=InitConfig())
    out = data_init.data_dependent_init(params, cfg, iter(()), param_shardings=None)
    assert out is params


def test_a_codec_without_the_heads_is_refused_by_name():
    # A codec_factory model without the SEANet convs / VAE heads must not be half-initialised.
    params = {"codec": {"encoder": {"Dense_0": {"kernel": np.ones((2, 2)), "bias": np.zeros(2)}}}}
    with pytest.raises(ValueError, match="no encoder/.*set init.mel_stats=false"):
        data_init.apply_init(params, CFG, np.zeros(80, np.float32), np.ones(80, np.float32))
    with pytest.raises(ValueError, match="vae_semantic_transformer/dense_var.*logvar_bias=null"):
        data_init.apply_init(params, dataclasses.replace(CFG, init=InitConfig(logvar_bias=-6.0)))
