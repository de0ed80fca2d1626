"""Stage table -> optimiser labels: exact cover of every parameter, no state for frozen ones.

Runs on the real codec's parameter tree (shapes only, nothing is compiled).
"""

import jax
import numpy as np
import pytest
from flax import traverse_util

from secoustic_jax.training import sharding as shd
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet
from secoustic_jax.training.optim import decay_mask, make_optimizer
from secoustic_jax.training.runtime import model_shapes
from secoustic_jax.training.stages import (STAGE1_MODULES, STAGE_TABLE, StageMaskError, StageSpec,
                                           param_labels, path_labels, stage_spec, stats_labels)
from train_standin import tiny_experiment


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
