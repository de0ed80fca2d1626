"""Each loss against a straightforward numpy reference; padding invariance; KL ramp values."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax import losses
from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.train import LossConfig

RTOL = 1e-5  # float32 vs float64 reference over <= a few thousand summed terms


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_contrastive(u, v, mask, scale, ids=None, mask_same=False):
    """Loop-based float64 reference: softmax over valid frames only."""
    uf, vf = u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])
    keep = np.nonzero(mask.reshape(-1) > 0)[0]
    uf, vf = uf[keep].astype(np.float64), vf[keep].astype(np.float64)
    lg = scale * uf @ vf.T
    n = len(keep)
    if mask_same:
        idv = ids.reshape(-1)[keep]
        same = (idv[:, None] == idv[None, :]) & ~np.eye(n, dtype=bool)
        lg = np.where(same, -np.inf, lg)
    s2p = np.mean([np.log(np.sum(np.exp(lg[i]))) - lg[i, i] for i in range(n)])
    p2s = np.mean([np.log(np.sum(np.exp(lg[:, j]))) - lg[j, j] for j in range(n)])
    acc_s = np.mean([np.argmax(lg[i]) == i for i in range(n)])
    return 0.5 * (s2p + p2s), acc_s


def test_mel_loss_matches_numpy_and_ignores_extra_frames(rng):
    pred = rng.normal(size=(2, 12, 80)).astype(np.float32)
    target = rng.normal(size=(2, 10, 80)).astype(np.float32)
    mask = np.zeros((2, 10), np.float32)
    mask[0, :10], mask[1, :6] = 1, 1
    got, m = losses.mel_loss(pred, target, mask)
    diff = (pred[:, :10] - target) ** 2
    want = (diff[0].sum() + diff[1, :6].sum()) / (80 * 16)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    assert float(m["mel_frames"]) == 16
    with pytest.raises(ValueError, match="cannot cover"):
        losses.mel_loss(pred[:, :8], target, mask)


def test_mel_loss_l1_matches_numpy_and_still_reports_the_mse(rng):
    pred = rng.normal(size=(2, 12, 80)).astype(np.float32)
    target = rng.normal(size=(2, 10, 80)).astype(np.float32)
    mask = np.zeros((2, 10), np.float32)
    mask[0, :7], mask[1, :10] = 1, 1
    got, m = losses.mel_loss(pred, target, mask, "l1")
    diff = pred[:, :10] - target
    want_l1 = (np.abs(diff[0, :7]).sum() + np.abs(diff[1]).sum()) / (80 * 17)
    want_mse = ((diff[0, :7] ** 2).sum() + (diff[1] ** 2).sum()) / (80 * 17)
    np.testing.assert_allclose(float(got), want_l1, rtol=RTOL)
    np.testing.assert_allclose(float(m["mel_mse"]), want_mse, rtol=RTOL)
    _, m_mse = losses.mel_loss(pred, target, mask)
    assert float(m_mse["mel_mse"]) == float(m_mse["mel"])
    with pytest.raises(ValueError, match="masked_l1: .*cannot cover"):
        losses.mel_loss(pred[:, :8], target, mask, "l1")


def test_mel_distance_is_validated():
    LossConfig(mel_distance="l1").validate()
    with pytest.raises(ConfigError, match="mel_distance must be one of"):
        LossConfig(mel_distance="huber").validate()


def test_acoustic_loss_matches_numpy_and_stops_gradient_to_target(rng):
    a_hat = rng.normal(size=(3, 5, 16)).astype(np.float32)
    a_star = rng.normal(size=(3, 5, 16)).astype(np.float32)
    mask = (rng.random((3, 5)) > 0.3).astype(np.float32)
    got, _ = losses.acoustic_loss(a_hat, a_star, mask)
    want = ((a_hat - a_star) ** 2 * mask[..., None]).sum() / (16 * mask.sum())
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    g = jax.grad(lambda t: losses.acoustic_loss(a_hat, t, mask)[0])(jnp.asarray(a_star))
    assert float(jnp.abs(g).max()) == 0.0


@pytest.mark.parametrize("per_item", [True, False])
def test_kl_hinge_matches_numpy(rng, per_item):
    mu = rng.normal(size=(2, 7, 8)).astype(np.float32) * 0.5
    lv = rng.normal(size=(2, 7, 8)).astype(np.float32) * 0.3
    mask = np.ones((2, 7), np.float32)
    mask[1, 4:] = 0
    margin = 1.0
    got, m = losses.kl_hinge_loss(mu, lv, mask, margin, per_item)
    kl = 0.5 * np.sum(mu.astype(np.float64) ** 2 + np.exp(lv) - lv - 1, axis=-1)
    valid = kl[mask > 0]
    want = np.mean(np.maximum(valid - margin, 0)) if per_item else max(valid.mean() - margin, 0)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    np.testing.assert_allclose(float(m["kl_raw"]), valid.mean(), rtol=RTOL)
    np.testing.assert_allclose(float(m["kl_active"]), np.mean(valid > margin), rtol=RTOL)


def test_kl_ramp_boundary_steps():
    cfg = LossConfig()  # 1e-5 between 20k and 30k
    for step, want in [(0, 0.0), (19_999, 0.0), (20_000, 0.0), (25_000, 0.5e-5),
                       (30_000, 1e-5), (29_000, 0.9e-5), (100_000, 1e-5)]:
        np.testing.assert_allclose(float(losses.kl_ramp(step, cfg)), want, rtol=1e-6, atol=1e-12)
    step_fn = dataclasses.replace(cfg, kl_ramp_start=5, kl_ramp_end=5)
    assert float(losses.kl_ramp(4, step_fn)) == 0.0
    assert float(losses.kl_ramp(5, step_fn)) == float(np.float32(1e-5))  # float32 weight


def _contrastive_inputs(rng, b=3, t=9, d=8):
    u = _unit(rng.normal(size=(b, t, d))).astype(np.float32)
    v = _unit(rng.normal(size=(b, t, d))).astype(np.float32)
    mask = np.ones((b, t), np.float32)
    mask[1, 5:], mask[2, 2:] = 0, 0
    return u, v, mask


def test_contrastive_matches_numpy(rng):
    u, v, mask = _contrastive_inputs(rng)
    got, m = losses.contrastive_loss(u, v, mask, 7.5)
    want, acc = ref_contrastive(u, v, mask, 7.5)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    np.testing.assert_allclose(float(m["acc_s2p"]), acc, rtol=RTOL)
    assert float(m["frames"]) == mask.sum()


def test_contrastive_same_phone_masking_matches_numpy(rng):
    u, v, mask = _contrastive_inputs(rng)
    ids = rng.integers(1, 4, mask.shape)
    got, _ = losses.contrastive_loss(u, v, mask, 5.0, phone_ids=ids, mask_same_phone=True)
    want, _ = ref_contrastive(u, v, mask, 5.0, ids, mask_same=True)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_contrastive_is_invariant_to_padding(rng):
    u, v, mask = _contrastive_inputs(rng)
    base, _ = losses.contrastive_loss(u, v, mask, 10.0)
    # More padded frames per utterance (garbage in them) and a fully padded utterance.
    pad = rng.normal(size=(3, 6, 8)).astype(np.float32)
    u2 = np.concatenate([u, pad], 1)
    v2 = np.concatenate([v, pad[::-1]], 1)
    m2 = np.concatenate([mask, np.zeros((3, 6), np.float32)], 1)
    u2 = np.concatenate([u2, u2[:1] * 3], 0)
    v2 = np.concatenate([v2, v2[:1]], 0)
    m2 = np.concatenate([m2, np.zeros((1, 15), np.float32)], 0)
    padded, _ = losses.contrastive_loss(u2, v2, m2, 10.0)
    np.testing.assert_allclose(float(padded), float(base), rtol=1e-6)  # summation order only
    g = jax.grad(lambda x: losses.contrastive_loss(x, v2, m2, 10.0)[0])(jnp.asarray(u2))
    assert float(jnp.abs(g * (1 - m2[..., None])).max()) == 0.0  # padding gets no gradient


def test_contrastive_subsampling_uses_a_subset_of_valid_frames(rng):
    u, v, mask = _contrastive_inputs(rng, b=4, t=16)
    key = jax.random.PRNGKey(3)
    got, m = losses.contrastive_loss(u, v, mask, 6.0, max_frames=20, key=key)
    idx, valid = losses.subsample_frames(key, jnp.asarray(mask.reshape(-1) > 0), 20)
    idx = np.asarray(idx)
    assert np.all(np.asarray(valid)) and len(set(idx.tolist())) == 20
    sub = lambda x: x.reshape(-1, x.shape[-1])[idx][None]  # noqa: E731
    want, _ = ref_contrastive(sub(u), sub(v), np.ones((1, 20)), 6.0)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    assert float(m["frames"]) == 20
    with pytest.raises(ValueError, match="PRNG key"):
        losses.contrastive_loss(u, v, mask, 6.0, max_frames=20)


def ref_code_usage(b, levels, mask, tau):
    """float64 enumeration of the K codes: 1 - (H(batch mean) - mean frame entropy) / ln K."""
    frames, w = b.reshape(-1, b.shape[-1]).astype(np.float64), mask.reshape(-1) > 0
    basis = np.cumprod([1] + list(levels[:-1]))
    k = int(np.prod(levels))
    joint = np.zeros((len(frames), k))
    for n, x in enumerate(frames):
        ps = []
        for d, lv in enumerate(levels):
            lg = -(x[d] - (np.arange(lv) - lv // 2)) ** 2 / tau
            p = np.exp(lg - lg.max())
            ps.append(p / p.sum())
        for digits in itertools.product(*[range(lv) for lv in levels]):
            joint[n, np.dot(digits, basis)] = np.prod([ps[d][j] for d, j in enumerate(digits)])
    h = lambda p: -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=-1)
    info = h(joint[w].mean(0)) - h(joint[w]).mean()
    return 1.0 - info / np.log(k)


def test_code_usage_matches_enumeration(rng):
    b = rng.uniform(-1.2, 1.2, size=(2, 6, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
    levels = (3, 4, 2)  # mixed and even level counts: centres k - floor(L/2)
    loss, m = losses.code_usage_loss(b, levels, mask, 0.3)
    np.testing.assert_allclose(float(loss), ref_code_usage(b, levels, mask, 0.3), rtol=RTOL)
    assert 0.0 < float(m["frame_entropy_bits"]) < float(m["batch_entropy_bits"])


def test_code_usage_limits_and_threshold_parking():
    levels, tau = (3, 3), 0.01  # a tiny temperature makes the assignment hard
    grid = np.array([[i, j] for j in (-1, 0, 1) for i in (-1, 0, 1)], np.float32)[None]
    ones = np.ones((1, 9), np.float32)
    # Every one of the K = 9 codes used once: the most a batch can be told apart.
    assert float(losses.code_usage_loss(grid, levels, ones, tau)[0]) == pytest.approx(0.0, abs=1e-6)
    # All frames on one code: no information.
    same = np.zeros((1, 9, 2), np.float32)
    assert float(losses.code_usage_loss(same, levels, ones, tau)[0]) == pytest.approx(1.0, abs=1e-6)
    # Every frame on a rounding threshold spreads the batch mean but each frame as much:
    # the term stays at 1, so parking values there cannot lower it.
    park = np.full((1, 9, 2), 0.5, np.float32)
    assert float(losses.code_usage_loss(park, levels, ones, tau)[0]) == pytest.approx(1.0, abs=1e-6)


def test_code_usage_ignores_padded_frames(rng):
    b = rng.uniform(-1, 1, size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    levels = (3,) * 8
    f = lambda x: losses.code_usage_loss(x, levels, mask, 0.1)[0]
    moved = b.copy()
    moved[0, 3:] = 7.0  # padding content must not matter
    assert float(f(b)) == pytest.approx(float(f(moved)), rel=RTOL)
    g = np.asarray(jax.grad(f)(jnp.asarray(b)))
    assert np.all(g[0, 3:] == 0) and np.any(g[1] != 0)


@pytest.mark.parametrize("field,value", [("code_usage_weight", -0.1),
                                         ("code_usage_weight", float("nan")),
                                         ("code_usage_temperature", 0.0)])
def test_code_usage_options_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(LossConfig(), **{field: value}).validate()
