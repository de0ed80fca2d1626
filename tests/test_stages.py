"""Stage table -> optimiser labels: exact cover of every parameter, no state for frozen ones.

Runs on the real codec's parameter tree (shapes only, nothing is compiled); the code-usage
term's test runs stage 2's objective on the stand-in codec.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest
from flax import traverse_util

from secoustic_jax.config.base import ConfigError
from secoustic_jax.training import sharding as shd
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet
from secoustic_jax.training.objective import split_rngs, stage_objective
from secoustic_jax.training.optim import decay_mask, make_optimizer
from secoustic_jax.training.runtime import model_shapes
from secoustic_jax.training.stages import (STAGE1_MODULES, STAGE_TABLE, StageMaskError, StageSpec,
                                           loss_weights, param_labels, path_labels, stage_spec,
                                           stats_labels)
from train_standin import standin_factory, tiny_experiment


@pytest.fixture(scope="module")
def shapes():
    cfg, _ = resolve_config(tiny_experiment(standin=False))
    net = TrainNet(cfg)
    return cfg, model_shapes(net, shd.make_mesh(cfg.mesh), cfg)


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_labels_cover_every_parameter_exactly_once(shapes, index):
    cfg, sh = shapes
    spec = stage_spec(index)
    labels = _flat(param_labels(sh.params, spec))
    assert set(labels) == set(_flat(sh.params))  # every leaf has a label
    for path, lab in labels.items():
        in_train = any(path == p or path.startswith(p + "/") for p in spec.trainable)
        assert lab == ("train" if in_train else "frozen"), path
    if index == 0:
        trained = {p for p, lab in labels.items() if lab == "train"}
        assert trained and all(p.startswith(STAGE1_MODULES) for p in trained)
    # BatchNorm statistics follow their module (frozen in stage 1, trained afterwards).
    stats = set(_flat(stats_labels(sh.batch_stats, spec)).values())
    assert stats == ({"frozen"} if index == 0 else {"train"})


def test_missing_or_overlapping_rules_are_errors():
    paths = ["codec/encoder/k", "codec/decoder/k", "aux/x"]
    with pytest.raises(StageMaskError, match="no rule"):
        path_labels(paths, StageSpec("t", ("codec/encoder",), ("codec/decoder",), (), "full"))
    with pytest.raises(StageMaskError, match="rules"):
        path_labels(paths, StageSpec("t", ("codec",), ("codec/decoder", "aux"), (), "full"))
    # Prefixes match whole path components only ("codec/enc" does not cover "codec/encoder").
    with pytest.raises(StageMaskError):
        path_labels(paths, StageSpec("t", ("codec/enc", "codec/decoder"), ("aux",), (), "full"))


def test_stage_table_rows_are_consistent():
    for name, spec in STAGE_TABLE.items():
        assert spec.name == name and not set(spec.trainable) & set(spec.frozen)
    assert stage_spec(2).frozen == ()  # stage 3 trains everything


def test_kl_paralinguistic_scale_multiplies_only_gs_kl():
    base = tiny_experiment(standin=False)
    cfg = dataclasses.replace(base, loss=dataclasses.replace(base.loss,
                                                             kl_paralinguistic_scale=100.0))
    assert "kl_paralinguistic" not in loss_weights(cfg, 0, 0.5)  # stage 1 has no KL
    for index in (1, 2):
        w, w1 = loss_weights(cfg, index, 1e-5), loss_weights(base, index, 1e-5)
        assert w["kl_paralinguistic"] == pytest.approx(1e-3) and w["kl_semantic"] == 1e-5
        assert {k: v for k, v in w.items() if k != "kl_paralinguistic"} == \
            {k: v for k, v in w1.items() if k != "kl_paralinguistic"}
    with pytest.raises(ConfigError, match="kl_paralinguistic_scale"):
        dataclasses.replace(base.loss, kl_paralinguistic_scale=-1.0).validate()


def test_code_usage_term_is_in_the_token_stages_only_when_on():
    base = tiny_experiment(standin=False)
    on = dataclasses.replace(base, loss=dataclasses.replace(base.loss, code_usage_weight=0.5))
    for index in (0, 1, 2):
        assert "code_usage" not in loss_weights(base, index, 0.0)  # off: not computed
        assert loss_weights(on, index, 0.0).get("code_usage") == (None if index == 0 else 0.5)


def test_code_usage_term_reaches_the_quantiser_input():
    """With the term on, stage 2's objective carries it with its weight and its gradient
    reaches FSQ's project_in (through the bound, not only through the rounding's STE)."""
    cfg, _ = resolve_config(tiny_experiment({"loss.code_usage_weight": 1.0}))
    key = jax.random.PRNGKey(0)
    mel = jax.random.normal(key, (2, 32, 80)) - 5
    batch = {"mel": mel, "mel_mask": jnp.ones((2, 32)).at[1, 24:].set(0),
             "prompt_mel": mel[:, :16], "prompt_lengths": jnp.full((2,), 16),
             "phones": jnp.ones((2, 4), jnp.int32), "phone_durations": jnp.full((2, 4), 8)}
    net = TrainNet(cfg, standin_factory)
    variables = nn.unbox(net.init({"params": key, "sample": key, "dropout": key}, batch))
    rngs = split_rngs(jax.random.PRNGKey(3))

    def usage(params):
        _, (metrics, _) = stage_objective(net, {**variables, "params": params}, batch, rngs,
                                          stage_index=1, kl_w=0.0)
        return metrics["loss/code_usage"], metrics

    (value, metrics), grads = jax.value_and_grad(usage, has_aux=True)(variables["params"])
    assert 0.0 < float(value) < 1.0
    assert float(metrics["weighted/code_usage"]) == pytest.approx(float(value))
    proj = _flat(grads)
    assert any(k.startswith("codec/fsq/project_in") and np.any(np.asarray(v))
               for k, v in proj.items())


@pytest.mark.parametrize("index", [0, 1])
def test_frozen_parameters_get_no_optimizer_state(shapes, index):
    cfg, sh = shapes
    tx = make_optimizer(cfg, index, sh.params)
    opt = jax.eval_shape(tx.init, sh.params)
    labels = _flat(param_labels(sh.params, stage_spec(index)))
    n_train = sum(int(np.prod(v.shape)) for k, v in _flat(sh.params).items() if labels[k] == "train")
    n_state = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(opt))
    assert n_state == 2 * n_train + 2  # Adam mu and nu of trainable leaves + two step counts


def test_weight_decay_only_on_matrices(shapes):
    _, sh = shapes
    mask = _flat(decay_mask(sh.params))
    assert mask["codec/encoder_transformer/layers_0/linear1/kernel"]
    assert not mask["codec/encoder_transformer/layers_0/norm1/scale"]
    assert not mask["codec/encoder_transformer/layers_0/layer_scale_1/scale"]
    assert not mask["aux/logit_scale"] and not mask["aux/phoneme_encoder/embedding"]
    assert not any(v for k, v in mask.items() if k.endswith("/bias"))


def test_lr_scale_multiplies_exactly_the_matched_leaves(shapes):
    """optim.lr_scale: the update of a leaf under a rule is the unscaled update times its
    multiplier (longest prefix wins), every other leaf's update is unchanged, frozen leaves
    stay at zero, and a rule that matches nothing is an error."""
    import dataclasses

    from secoustic_jax.training.optim import lr_scale_tree

    cfg, sh = shapes
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_scale=()))  # the reference
    rules = (("codec/encoder", 0.5), ("codec/encoder/layer_0", 0.1), ("codec/vae_semantic_transformer", 3.0))
    scaled_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_scale=rules))
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype) * 0.3, sh.params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    base_tx, tx = make_optimizer(cfg, 0, sh.params), make_optimizer(scaled_cfg, 0, sh.params)
    for _ in range(3):  # past the first step: Adam's state matters
        u0, s0 = base_tx.update(grads, base_tx.init(params) if _ == 0 else s0, params)
        u1, s1 = tx.update(grads, tx.init(params) if _ == 0 else s1, params)
    f0, f1 = _flat(u0), _flat(u1)
    mult = _flat(lr_scale_tree(params, rules))
    assert mult["codec/encoder/layer_0/kernel"] == 0.1 and mult["codec/encoder/layer_3/kernel"] == 0.5
    assert mult["codec/decoder/layer_0/kernel"] == 1.0
    for path, u in f1.items():
        np.testing.assert_allclose(u, f0[path] * mult[path], rtol=1e-6)  # one float32 product
    # Stage 1 freezes the semantic VAE: its (x3) updates are still exactly zero.
    assert not any(np.any(v) for k, v in f1.items() if k.startswith("codec/vae_semantic_transformer"))
    with pytest.raises(ValueError, match="no parameter under.*codec/encodr"):
        lr_scale_tree(params, (("codec/encodr", 0.5),))


@pytest.mark.parametrize("rules, match", [((("codec/encoder", 0.5), ("codec/encoder", 0.2)), "distinct"),
                                          ((("codec/encoder", 0.0),), "> 0"),
                                          ((("/", 0.5),), "non-empty")])
def test_lr_scale_rules_are_validated(rules, match):
    from secoustic_jax.config.base import ConfigError
    from secoustic_jax.config.train import OptimConfig

    with pytest.raises(ConfigError, match=match):
        OptimConfig(lr_scale=rules).validate()
