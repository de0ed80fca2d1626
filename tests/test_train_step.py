"""The jitted train step: freezing is bitwise, BatchNorm statistics follow it, the NaN guard
skips the update, gradient accumulation matches the full batch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from secoustic_jax.training import runtime as rtm, sharding as shd
from secoustic_jax.training.data import SyntheticSource
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet
from secoustic_jax.training.stages import STAGE1_MODULES, STAGE2_MODULES
from train_standin import standin_factory, tiny_experiment


def _setup(standin=True, **over):
    cfg, _ = resolve_config(tiny_experiment(over, standin=standin))
    net = TrainNet(cfg, standin_factory if standin else None)
    mesh = shd.make_mesh(cfg.mesh)
    shapes = rtm.model_shapes(net, mesh, cfg)
    params, stats = rtm.init_variables(net, mesh, cfg, shapes, jax.random.PRNGKey(0))
    return cfg, net, mesh, shapes, params, stats


def _host(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/") if tree else {}


def _run(cfg, net, mesh, shapes, params, stats, index, steps, batches=None):
    rt = rtm.build_stage(net, mesh, cfg, shapes, index)
    params, stats = jax.tree.map(jnp.copy, (params, stats))  # the step donates its state
    state = rtm.start_state(rt, params, stats, step=0, key=jax.random.PRNGKey(1))
    src = SyntheticSource(cfg, cfg.stages[index].batch_size, cfg.stages[index].segment_frames)
    out = []
    for i in range(steps):
        b = batches[i] if batches else next(src)
        state, m = rt.train_step(state, shd.global_batch(mesh, b))
        out.append(jax.device_get(m))
    return state, out


def _check_freezing(cfg, net, mesh, shapes, params, stats, steps=3):
    p0, s0 = _host(params), _host(stats)
    # Stage 1: stage-2 modules and every BatchNorm statistic are bitwise unchanged.
    st1, _ = _run(cfg, net, mesh, shapes, params, stats, 0, steps)
    p1, s1 = _host(st1.params), _host(st1.batch_stats)
    for k, v in p0.items():
        same = np.array_equal(v, p1[k]) and v.dtype == p1[k].dtype
        assert same == k.startswith(STAGE2_MODULES) or (same and v.size <= 1), k
    assert all(np.array_equal(v, s1[k]) for k, v in s0.items())
    # Stage 2 from there: every stage-1 parameter is bitwise unchanged, BN statistics move.
    p1_copy = {k: np.copy(v) for k, v in p1.items()}
    st2, _ = _run(cfg, net, mesh, shapes, st1.params, st1.batch_stats, 1, steps)
    p2, s2 = _host(st2.params), _host(st2.batch_stats)
    for k, v in p1_copy.items():
        if k.startswith(STAGE1_MODULES):
            assert np.array_equal(v, p2[k]), k
    assert any(not np.array_equal(p1_copy[k], p2[k]) for k in p2 if k.startswith("aux"))
    assert any(not np.array_equal(v, s2[k]) for k, v in s1.items())


@pytest.mark.slow  # compiles both stage steps (~30 s on 2 idle cores)
def test_freezing_is_bitwise_standin():
    _check_freezing(*_setup())


@pytest.mark.slow
def test_freezing_is_bitwise_real_codec():
    """The real codec: its TorchBatchNorm statistics (incl. num_batches_tracked) too."""
    _check_freezing(*_setup(standin=False), steps=2)


@pytest.mark.slow  # compiles the stage-2 step twice
def test_nan_batch_is_skipped_and_counted():
    cfg, net, mesh, shapes, params, stats = _setup()
    src = SyntheticSource(cfg, 4, 32)
    good = next(src)
    bad = {k: np.copy(v) for k, v in good.items()}
    bad["mel"][1, 3, 5] = np.inf
    st, ms = _run(cfg, net, mesh, shapes, params, stats, 1, 3, [good, bad, good])
    assert [m["skipped"] for m in ms] == [0.0, 1.0, 0.0]
    assert int(st.nan_skipped) == 1 and int(st.nan_consecutive) == 0 and int(st.step) == 3
    assert all(np.isfinite(v).all() for v in _host(st.params).values())
    # The skipped step left everything as it was: two good steps == steps 1 and 3 here.
    st_ref, _ = _run(cfg, net, mesh, shapes, params, stats, 1, 2, [good, good])
    # Same update count; only the PRNG stream differs (the skipped step consumed a key).
    assert int(jax.device_get(st.opt_state.inner_states["train"].inner_state[1][0].count)) == \
        int(jax.device_get(st_ref.opt_state.inner_states["train"].inner_state[1][0].count))


@pytest.mark.slow  # compiles two stage-1 steps
def test_gradient_accumulation_matches_full_batch():
    cfg, net, mesh, shapes, params, stats = _setup()
    b = next(SyntheticSource(cfg, 4, 32))
    b["mel_mask"][:] = 1.0  # equal micro-batch sizes: mean of means == mean
    st1, m1 = _run(cfg, net, mesh, shapes, params, stats, 0, 2, [b, b])
    cfg2 = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, grad_accum=2))
    net2 = TrainNet(cfg2, standin_factory)
    st2, m2 = _run(cfg2, net2, mesh, shapes, params, stats, 0, 2, [b, b])
    np.testing.assert_allclose(m1[0]["loss/total"], m2[0]["loss/total"], rtol=1e-5)  # f32 sums
    np.testing.assert_allclose(m1[0]["grad_norm"], m2[0]["grad_norm"], rtol=1e-4)  # f32 sums
    for k, v in _host(st1.params).items():
        np.testing.assert_allclose(v, _host(st2.params)[k], rtol=1e-4, atol=1e-6, err_msg=k)
