"""The speaker adversary (`loss.speaker_adversary_weight`): gradient reversal, masked
pooling, the optional "adversary" subtree and its stage labels, and where its gradients go
in both modes (reverse: head descends the MSE, semantic branch ascends it; confusion: head
descends its MSE, branch descends the distance to the batch-mean G; G untouched)."""

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest
from flax import traverse_util

from secoustic_jax.config.base import ConfigError
from secoustic_jax.training.adversary import (adversary_loss, confusion_loss, grad_reverse,
                                              label_guard, pooled, speaker_confusion_loss)
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet, token_mask
from secoustic_jax.training.objective import split_rngs, stage_objective
from secoustic_jax.training.stages import loss_weights, param_labels, stage_spec
from train_standin import standin_factory, tiny_experiment


def test_grad_reverse_is_identity_forward_and_negates_backward():
    x = jnp.arange(6.0).reshape(2, 3)
    c = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.0, 4.0]])
    np.testing.assert_array_equal(grad_reverse(x), x)
    np.testing.assert_array_equal(jax.grad(lambda y: jnp.sum(grad_reverse(y) * c))(x), -c)


def test_pooled_is_the_masked_time_mean():
    s = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
    got = np.asarray(pooled(s, mask))
    np.testing.assert_allclose(got[0], np.asarray(s[0, :3]).mean(0), rtol=1e-6)  # float32 sum
    np.testing.assert_allclose(got[1], np.asarray(s[1]).mean(0), rtol=1e-6)


def test_loss_is_relative_to_the_batch_spread_of_g():
    g = jax.random.normal(jax.random.PRNGKey(2), (6, 4)) * 0.05 + 0.3
    pred = g + 0.01 * jax.random.normal(jax.random.PRNGKey(4), g.shape)
    np.testing.assert_allclose(adversary_loss(jnp.broadcast_to(g.mean(0), g.shape), g), 1.0,
                               rtol=1e-5)  # the batch mean scores exactly 1 (float32 sums)
    np.testing.assert_allclose(adversary_loss(10 * pred, 10 * g), adversary_loss(pred, g),
                               rtol=1e-5)  # scale-free
    assert float(adversary_loss(pred, g)) < 0.1


def test_weight_must_be_finite_and_non_negative():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="speaker_adversary_weight"):
            tiny_experiment({"loss.speaker_adversary_weight": bad})


def _setup(weight, mode="reverse", classes=0):
    cfg, _ = resolve_config(tiny_experiment({"loss.speaker_adversary_weight": weight,
                                             "loss.speaker_adversary_mode": mode,
                                             "loss.speaker_adversary_classes": classes}))
    key = jax.random.PRNGKey(0)
    mel = jax.random.normal(key, (2, 32, 80)) - 5
    batch = {"mel": mel, "mel_mask": jnp.ones((2, 32)).at[1, 24:].set(0),
             "prompt_mel": mel[:, :16], "prompt_lengths": jnp.full((2,), 16),
             "phones": jnp.ones((2, 4), jnp.int32), "phone_durations": jnp.full((2, 4), 8),
             "speaker": jnp.array([0, 2], jnp.int32)}
    net = TrainNet(cfg, standin_factory)
    variables = nn.unbox(net.init({"params": key, "sample": key, "dropout": key}, batch))
    return cfg, net, variables, batch


def test_off_means_no_parameters_and_no_term():
    cfg, _, variables, _ = _setup(0.0)
    assert "adversary" not in variables["params"]
    for stage in (1, 2):
        assert "speaker_adversary" not in loss_weights(cfg, stage, 0.0)


def test_on_adds_a_head_that_trains_in_stages_2_and_3_only():
    cfg, _, variables, _ = _setup(0.5)
    head = variables["params"]["adversary"]["head"]
    d = cfg.codec.paralinguistic.embed_dim
    assert head["kernel"].shape == (cfg.codec.transformer.d_model, d)
    for stage, want in ((0, "frozen"), (1, "train"), (2, "train")):
        labels = traverse_util.flatten_dict(param_labels(variables["params"], stage_spec(stage)), sep="/")
        assert {labels["adversary/head/kernel"], labels["adversary/head/bias"]} == {want}
        assert loss_weights(cfg, stage, 0.0).get("speaker_adversary") == (None if stage == 0 else 0.5)


def test_gradient_signs():
    """d(total)/d(head) = +w dMSE/d(head); d(total)/d(semantic branch) = -w dMSE/d(branch)
    for the adversary term, measured against the same MSE computed without the reversal;
    the paralinguistic encoder (which makes the target G) gets nothing from the term."""
    w = 0.5
    cfg, net, variables, batch = _setup(w)
    rngs = split_rngs(jax.random.PRNGKey(3))

    def term(params, reverse: bool):
        v = {**variables, "params": params}
        res, _ = net.apply(v, batch, train=True, method=TrainNet.full, rngs=rngs,
                           mutable=["batch_stats"])
        pred, branch, g = res["adversary"]
        assert branch is None
        if not reverse:  # the same head, applied without the reversal
            s = pooled(res["out"].semantic_embed, token_mask(batch["mel_mask"], 1))
            head = params["adversary"]["head"]
            pred = s @ head["kernel"] + head["bias"]
        return adversary_loss(pred, g)

    def total_minus_rest(params):
        v = {**variables, "params": params}
        tot, (metrics, _) = stage_objective(net, v, batch, rngs, stage_index=1, kl_w=0.0)
        return w * metrics["loss/speaker_adversary"], tot

    g_rev = jax.grad(lambda p: term(p, True))(variables["params"])
    g_plain = jax.grad(lambda p: term(p, False))(variables["params"])
    flat_rev = traverse_util.flatten_dict(g_rev, sep="/")
    flat_plain = traverse_util.flatten_dict(g_plain, sep="/")
    semantic = [k for k in flat_rev if k.startswith("codec/") and "paralinguistic" not in k
                and np.any(np.asarray(flat_plain[k]))]
    assert semantic  # the term reaches the semantic branch at all
    for k, v in flat_rev.items():
        if k.startswith("adversary/"):
            np.testing.assert_allclose(v, flat_plain[k], rtol=1e-5, atol=1e-7)
        elif "paralinguistic" in k:
            assert not np.any(np.asarray(v)), k  # G is a stop-gradient target
        else:
            np.testing.assert_allclose(v, -np.asarray(flat_plain[k]), rtol=1e-5, atol=1e-7)
    # The stage objective carries the term with its weight.
    adv, tot = total_minus_rest(variables["params"])
    assert np.isfinite(float(tot)) and float(adv) > 0


def test_mode_must_be_known():
    with pytest.raises(ConfigError, match="speaker_adversary_mode"):
        tiny_experiment({"loss.speaker_adversary_mode": "gan"})


def test_confusion_loss_parts():
    g = jax.random.normal(jax.random.PRNGKey(5), (6, 4)) * 0.05 + 0.3
    centre = jnp.broadcast_to(g.mean(0), g.shape)
    total, parts = confusion_loss(g, centre, g)
    np.testing.assert_allclose(parts["head"], 0.0, atol=1e-6)  # the head reads G exactly
    np.testing.assert_allclose(parts["confusion"], 0.0, atol=1e-6)  # branch at the mean voice
    _, parts = confusion_loss(centre, g, g)
    np.testing.assert_allclose(parts["head"], 1.0, rtol=1e-5)  # float32 sums
    np.testing.assert_allclose(parts["confusion"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(total, 0.0, atol=1e-6)


def test_confusion_gradients_never_mix():
    """Confusion mode: the head's gradient is exactly that of its own MSE on a fixed S; the
    semantic branch's is exactly that of the branch term through a fixed head (same
    parameters, computed by hand here); the paralinguistic encoder gets nothing."""
    cfg, net, variables, batch = _setup(0.5, "confusion")
    rngs = split_rngs(jax.random.PRNGKey(3))

    def forward(params):
        v = {**variables, "params": params}
        res, _ = net.apply(v, batch, train=True, method=TrainNet.full, rngs=rngs,
                           mutable=["batch_stats"])
        return res

    def term(params):
        return confusion_loss(*forward(params)["adversary"])[0]

    def by_hand(params, part):
        res = forward(params)
        s = pooled(res["out"].semantic_embed, token_mask(batch["mel_mask"], 1))
        head = params["adversary"]["head"]
        g = jax.lax.stop_gradient(res["out"].g_mu)
        spread = jnp.mean(jnp.var(g, axis=0)) + 1e-8
        if part == "head":
            pred = jax.lax.stop_gradient(s) @ head["kernel"] + head["bias"]
            return jnp.mean((pred - g) ** 2) / spread
        pred = s @ jax.lax.stop_gradient(head["kernel"]) + jax.lax.stop_gradient(head["bias"])
        return jnp.mean((pred - g.mean(0, keepdims=True)) ** 2) / spread

    flat = traverse_util.flatten_dict(jax.grad(term)(variables["params"]), sep="/")
    head = traverse_util.flatten_dict(jax.grad(lambda p: by_hand(p, "head"))(variables["params"]), sep="/")
    branch = traverse_util.flatten_dict(jax.grad(lambda p: by_hand(p, "branch"))(variables["params"]), sep="/")
    semantic = [k for k in flat if k.startswith("codec/") and np.any(np.asarray(branch[k]))]
    assert semantic and all(k.startswith("adversary/") for k in head if np.any(np.asarray(head[k])))
    for k, v in flat.items():
        if "paralinguistic" in k:
            assert not np.any(np.asarray(v)), k  # G is a stop-gradient target
        want = np.asarray(head[k]) + np.asarray(branch[k])
        np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-7)  # float32 re-association
    v = {**variables, "params": variables["params"]}
    tot, (metrics, _) = stage_objective(net, v, batch, rngs, stage_index=1, kl_w=0.0)
    assert np.isfinite(float(tot))
    np.testing.assert_allclose(metrics["loss/speaker_adversary"],
                               metrics["speaker_adversary/head"] + metrics["speaker_adversary/confusion"],
                               rtol=1e-6)


def test_speaker_mode_config_needs_its_class_count():
    with pytest.raises(ConfigError, match="speaker_adversary_classes"):
        tiny_experiment({"loss.speaker_adversary_mode": "speaker"})
    with pytest.raises(ConfigError, match="speaker_adversary_classes"):
        tiny_experiment({"loss.speaker_adversary_classes": 4})
    with pytest.raises(ConfigError, match="speaker_adversary_classes"):
        tiny_experiment({"loss.speaker_adversary_mode": "speaker",
                         "loss.speaker_adversary_classes": 1})


def test_speaker_confusion_loss_parts():
    labels = jnp.array([0, 1, 2, 1])
    sure = 50.0 * jax.nn.one_hot(labels, 3)  # names every speaker
    flat = jnp.zeros((4, 3))  # names none
    total, parts = speaker_confusion_loss(sure, flat, labels)
    np.testing.assert_allclose(parts["head"], 0.0, atol=1e-6)
    np.testing.assert_allclose(parts["confusion"], 0.0, atol=1e-6)
    np.testing.assert_allclose(parts["head_accuracy"], 1.0)
    _, parts = speaker_confusion_loss(flat, sure, labels)
    np.testing.assert_allclose(parts["head"], 1.0, rtol=1e-6)  # chance = ln K / ln K
    assert float(parts["confusion"]) > 10  # a sure prediction is far from uniform
    total, parts = speaker_confusion_loss(sure, flat, None)  # validation: no labels
    np.testing.assert_allclose(total, 0.0, atol=1e-6)
    assert float(parts["head"]) == 0.0


def test_speaker_mode_gradients_never_mix():
    """The head learns only from its cross-entropy on the labels; the semantic branch only
    from the confusion term; G gets nothing."""
    cfg, net, variables, batch = _setup(0.5, "speaker", classes=3)
    assert variables["params"]["adversary"]["head"]["kernel"].shape[-1] == 3
    rngs = split_rngs(jax.random.PRNGKey(3))

    def part(params, name):
        res, _ = net.apply({**variables, "params": params}, batch, train=True,
                           method=TrainNet.full, rngs=rngs, mutable=["batch_stats"])
        return speaker_confusion_loss(*res["adversary"])[1][name]

    grads = {n: traverse_util.flatten_dict(jax.grad(part)(variables["params"], n), sep="/")
             for n in ("head", "confusion")}
    moved = {n: {k for k, v in g.items() if np.any(np.asarray(v))} for n, g in grads.items()}
    assert moved["head"] and all(k.startswith("adversary/") for k in moved["head"])
    assert moved["confusion"] and all(k.startswith("codec/") for k in moved["confusion"])
    assert not any("paralinguistic" in k for k in moved["confusion"])
    tot, (metrics, _) = stage_objective(net, variables, batch, rngs, stage_index=1, kl_w=0.0)
    assert np.isfinite(float(tot)) and "speaker_adversary/head_accuracy" in metrics
    _, (metrics, _) = stage_objective(net, variables, batch, rngs, stage_index=1, kl_w=0.0,
                                      train=False)
    assert float(metrics["speaker_adversary/head"]) == 0.0  # validation has no labels


def test_label_guard_names_an_out_of_range_speaker():
    cfg, _ = resolve_config(tiny_experiment({"loss.speaker_adversary_weight": 0.1,
                                             "loss.speaker_adversary_mode": "speaker",
                                             "loss.speaker_adversary_classes": 3}))
    put = label_guard(lambda b: b, cfg.loss)
    assert put({"speaker": np.array([0, 2])})["speaker"].tolist() == [0, 2]
    with pytest.raises(ValueError, match="speaker index 3 is outside"):
        put({"speaker": np.array([1, 3])})
    off = lambda b: b
    assert label_guard(off, tiny_experiment().loss) is off


def test_adversary_stages_choose_where_the_term_is():
    cfg = tiny_experiment({"loss.speaker_adversary_weight": 0.5,
                           "loss.speaker_adversary_stages": ["finetune"]})
    assert "speaker_adversary" not in loss_weights(cfg, 1, 0.0)
    assert loss_weights(cfg, 2, 0.0)["speaker_adversary"] == 0.5
    for bad in ([], ["acoustic"], ["finetune", "later"]):
        with pytest.raises(ConfigError, match="speaker_adversary_stages"):
            tiny_experiment({"loss.speaker_adversary_stages": bad})
