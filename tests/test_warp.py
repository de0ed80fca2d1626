"""audio/warp.py and `augment.semantic_warp`: the frequency warp of the log-mel is the
identity at alpha = 1 and moves a tone to alpha times its frequency; in training it feeds
the semantic branch only, and only in training."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from secoustic_jax.api import init_variables
from secoustic_jax.audio.mel import log_mel
from secoustic_jax.audio.warp import (centre_frequencies, hz_to_mel, sample_alpha,
                                      warp_log_mel)
from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import MelConfig, codec_preset
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet
from train_standin import standin_factory, tiny_experiment

CFG = MelConfig()


def test_mel_scale_is_librosa_slaney():
    f = np.array([0.0, 100.0, 999.0, 1000.0, 2500.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(f), librosa.hz_to_mel(f, htk=False), rtol=1e-12)
    want = librosa.mel_frequencies(CFG.n_mels + 2, fmin=CFG.fmin, fmax=CFG.fmax)[1:-1]
    np.testing.assert_allclose(centre_frequencies(CFG), want, rtol=1e-9)


def test_alpha_one_is_identity():
    mel = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 80)) * 3 - 5
    out = warp_log_mel(mel, jnp.ones((2,)), CFG)
    # float32 bin positions are exact to ~1e-5 bins; neighbouring bins differ by ~4 here.
    np.testing.assert_allclose(out, mel, atol=2e-4)


@pytest.mark.parametrize("f0,alpha", [(500.0, 1.2), (1500.0, 1 / 1.2)])
def test_tone_moves_to_alpha_times_its_frequency(f0, alpha):
    t = np.arange(22050) / 22050
    tone = lambda f: log_mel(jnp.asarray(0.5 * np.sin(2 * np.pi * f * t), jnp.float32)[None], CFG)
    warped = warp_log_mel(tone(f0), jnp.full((1,), alpha, jnp.float32), CFG)
    target = tone(f0 * alpha)
    mid = slice(10, -10)  # away from the reflect-padded edges
    peak_w = np.argmax(np.asarray(warped)[0, mid], axis=-1)
    peak_t = np.argmax(np.asarray(target)[0, mid], axis=-1)
    # A tone between two filter centres can peak in either: one bin of slack.
    assert np.all(np.abs(peak_w - peak_t) <= 1), (peak_w[:3], peak_t[:3])
    peak_orig = np.argmax(np.asarray(tone(f0))[0, mid], axis=-1)
    assert np.all(peak_w != peak_orig)  # and it did move


def test_bad_shapes_are_named():
    mel = jnp.zeros((2, 5, 80))
    with pytest.raises(ValueError, match="80"):
        warp_log_mel(jnp.zeros((2, 5, 64)), jnp.ones((2,)), CFG)
    with pytest.raises(ValueError, match="alpha"):
        warp_log_mel(mel, jnp.ones((3,)), CFG)


def test_sample_alpha_range_and_seed():
    a = np.asarray(sample_alpha(jax.random.PRNGKey(3), 4096, 0.2))
    assert a.min() >= 1 / 1.2 - 1e-6 and a.max() <= 1.2 + 1e-6
    assert abs(np.mean(np.log(a))) < 0.01  # log-uniform, symmetric about 1 (4096 draws)
    np.testing.assert_array_equal(a, sample_alpha(jax.random.PRNGKey(3), 4096, 0.2))


def test_config_range():
    with pytest.raises(ConfigError, match="semantic_warp"):
        tiny_experiment({"augment.semantic_warp": 1.5})


def test_codec_semantic_mel_feeds_only_the_semantic_branch():
    cfg = codec_preset("tiny")
    codec = SecoustiCodec(cfg)
    variables = init_variables(cfg, 1)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    mel = jax.random.normal(k1, (2, 32, 80)) - 5
    other = jax.random.normal(k2, (2, 32, 80)) - 5
    prompt = mel[:, :16]
    run = lambda **kw: codec.apply(variables, mel, prompt, train=False, **kw)
    base, same, diff = run(), run(semantic_mel=mel), run(semantic_mel=other)
    for name in ("acoustic", "mel_from_acoustic", "semantic_mu", "tokens", "connector_out"):
        np.testing.assert_array_equal(getattr(same, name), getattr(base, name), err_msg=name)
    for name in ("acoustic", "mel_from_acoustic", "g_mu"):
        np.testing.assert_array_equal(getattr(diff, name), getattr(base, name), err_msg=name)
    assert not np.allclose(diff.semantic_mu, base.semantic_mu)


def test_trainnet_warps_in_training_only():
    cfg_off, _ = resolve_config(tiny_experiment())
    cfg_on, _ = resolve_config(tiny_experiment({"augment.semantic_warp": 0.3}))
    key = jax.random.PRNGKey(0)
    mel = jax.random.normal(key, (2, 32, 80)) - 5
    batch = {"mel": mel, "prompt_mel": mel[:, :16], "prompt_lengths": jnp.full((2,), 16),
             "phones": jnp.ones((2, 4), jnp.int32), "phone_durations": jnp.full((2, 4), 8)}
    net_off, net_on = TrainNet(cfg_off, standin_factory), TrainNet(cfg_on, standin_factory)
    rngs = {"params": key, "sample": key, "dropout": key}
    variables = net_off.init(rngs, batch)

    def full(net, train):
        res, _ = net.apply(variables, batch, train=train, method=TrainNet.full, rngs=rngs,
                           mutable=["batch_stats"])
        return res["out"]

    on, off = full(net_on, True), full(net_off, True)
    np.testing.assert_array_equal(on.acoustic, off.acoustic)  # A* is never warped
    assert not np.allclose(on.semantic_mu, off.semantic_mu)
    np.testing.assert_array_equal(full(net_on, False).semantic_mu, full(net_off, False).semantic_mu)


def test_voice_warp_moves_target_and_prompt_together():
    from secoustic_jax.training.objective import voice_warped
    mel = jax.random.normal(jax.random.PRNGKey(1), (3, 24, 80)) - 5
    prompt = jnp.concatenate([mel[:, :10], jnp.zeros((3, 6, 80))], axis=1)  # zero-padded
    batch = {"mel": mel, "prompt_mel": prompt, "phones": jnp.ones((3, 2), jnp.int32)}
    out = voice_warped(batch, jax.random.PRNGKey(2), 0.2, CFG)
    assert out["phones"] is batch["phones"]
    # One alpha per item for both: the prompt's frames are the target's first frames.
    np.testing.assert_array_equal(out["prompt_mel"][:, :10], out["mel"][:, :10])
    np.testing.assert_array_equal(out["prompt_mel"][:, 10:], 0.0)
    assert not np.allclose(out["mel"], mel, atol=1e-2)
    with pytest.raises(ConfigError, match="voice_warp"):
        tiny_experiment({"augment.voice_warp": -0.1})
    with pytest.raises(ConfigError, match="voice_warp_fraction"):
        tiny_experiment({"augment.voice_warp_fraction": 0.0})


def test_voice_warp_fraction_leaves_the_rest_as_recorded():
    from secoustic_jax.training.objective import voice_warped
    mel = jax.random.normal(jax.random.PRNGKey(1), (64, 4, 80)) - 5
    batch = {"mel": mel, "prompt_mel": mel[:, :2]}
    out = voice_warped(batch, jax.random.PRNGKey(2), 0.2, CFG, fraction=0.5)
    # alpha = 1 is the identity up to float32 bin positions (see test_alpha_one_is_identity)
    same = np.all(np.abs(np.asarray(out["mel"] - mel)) < 2e-4, axis=(1, 2))
    assert 16 <= same.sum() <= 48, same.sum()  # ~half of 64 items kept (binomial, p = 0.5)
    np.testing.assert_array_equal(out["prompt_mel"], out["mel"][:, :2])


def test_voice_warp_applies_in_training_only():
    from secoustic_jax.training.objective import split_rngs, stage_objective
    cfg_off, _ = resolve_config(tiny_experiment())
    cfg_on, _ = resolve_config(tiny_experiment({"augment.voice_warp": 0.3}))
    key = jax.random.PRNGKey(0)
    mel = jax.random.normal(key, (2, 32, 80)) - 5
    batch = {"mel": mel, "mel_mask": jnp.ones((2, 32)), "prompt_mel": mel[:, :16],
             "prompt_lengths": jnp.full((2,), 16), "phones": jnp.ones((2, 4), jnp.int32),
             "phone_durations": jnp.full((2, 4), 8)}
    net_off, net_on = TrainNet(cfg_off, standin_factory), TrainNet(cfg_on, standin_factory)
    variables = net_off.init({"params": key, "sample": key, "dropout": key}, batch)

    def loss(net, train, stage):
        total, _ = stage_objective(net, variables, batch, split_rngs(key), stage_index=stage,
                                   kl_w=0.0, train=train)
        return float(total)

    assert loss(net_on, True, 1) != loss(net_off, True, 1)  # stage 2 trains on warped voices
    assert loss(net_on, False, 1) == loss(net_off, False, 1)  # validation never warps
    assert loss(net_on, True, 0) == loss(net_off, True, 0)  # stage 1 never warps
    cfg_late, _ = resolve_config(tiny_experiment({"augment.voice_warp": 0.3,
                                                  "augment.voice_warp_stages": ["finetune"]}))
    net_late = TrainNet(cfg_late, standin_factory)
    assert loss(net_late, True, 1) == loss(net_off, True, 1)  # not a warping stage
    assert loss(net_late, True, 2) != loss(net_off, True, 2)
    with pytest.raises(ConfigError, match="voice_warp_stages"):
        tiny_experiment({"augment.voice_warp_stages": ["acoustic"]})
