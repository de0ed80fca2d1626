"""Windowed causal attention: dense oracle vs torch SDPA, banded == dense, ring KV cache."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from secoustic_jax.layers.attention import (banded_attention, cache_attention, dense_attention,
                                            init_kv_cache, reset_kv_cache, window_mask)


def qkv(rng, b=1, h=2, t=50, dh=8, dtype=np.float32):
    """Three random [B, H, T, Dh] arrays (scaled so the softmax is far from uniform)."""
    return [jnp.asarray(2.0 * rng.standard_normal((b, h, t, dh)), dtype) for _ in range(3)]


def test_window_mask_rule():
    pos = jnp.arange(10)
    m = np.asarray(window_mask(pos, pos, 3))
    for t in range(10):
        for s in range(10):
            assert m[t, s] == (0 <= t - s < 3)
    assert not np.asarray(window_mask(jnp.array([5]), jnp.array([-1]), 10)).any()  # empty slot


@pytest.mark.parametrize("context", [250, 5, 1])
def test_dense_matches_torch_sdpa(rng, context):
    q, k, v = qkv(rng, b=2, h=3, t=300, dh=16)
    got = np.asarray(dense_attention(q, k, v, context))
    pos = torch.arange(300)
    delta = pos[:, None] - pos[None, :]
    mask = (delta >= 0) & (delta < context)  # True = attend (torch bool-mask convention)
    ref = F.scaled_dot_product_attention(*(torch.from_numpy(np.array(a)) for a in (q, k, v)),
                                         attn_mask=mask).numpy()
    # float32: logits of std ~8 (their ulps are amplified by exp), 300-term sums in another
    # order, |v| up to ~8: about 1e-6 relative.
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("context", [250, 249, 5])
@pytest.mark.parametrize("t", [1, 7, 250, 251, 600, 1000])
def test_banded_equals_dense(rng, t, context):
    q, k, v = qkv(rng, t=t)
    ref = np.asarray(dense_attention(q, k, v, context))
    # Blocks of 1 row, not dividing T, the default 128, and longer than T.
    for block in ((1,) if t <= 7 else ()) + (7, 128, 300):
        got = np.asarray(jax.jit(banded_attention, static_argnums=(3, 4))(q, k, v, context, block))
        # Same terms, different summation order (band vs full row); |v| up to ~8 and large
        # logits: measured <= 7.3e-6, i.e. ~1e-6 relative.
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0, err_msg=f"block {block}")


@pytest.mark.parametrize("blocks_per_step", [1, 3, 100])
def test_banded_grouping_is_invisible(rng, blocks_per_step):
    q, k, v = qkv(rng, t=500)
    ref = np.asarray(banded_attention(q, k, v, 250, 64))
    got = np.asarray(banded_attention(q, k, v, 250, 64, blocks_per_step=blocks_per_step))
    # Identical per-block arithmetic; vmapped vs scanned blocks may only reorder nothing.
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_banded_gradient_equals_dense(rng):
    q, k, v = qkv(rng, t=300)
    w = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * w)

    dense = jax.grad(lambda *a: loss(lambda *b: dense_attention(*b, 250), *a), argnums=(0, 1, 2))
    band = jax.grad(lambda *a: loss(lambda *b: banded_attention(*b, 250, 64), *a), argnums=(0, 1, 2))
    for g_d, g_b in zip(dense(q, k, v), band(q, k, v)):
        # float32 backward through softmax, summation order differs: ulps of |grad| ~ 50.
        np.testing.assert_allclose(np.asarray(g_b), np.asarray(g_d), atol=2e-5, rtol=0)


def test_bfloat16_uses_float32_softmax(rng):
    q, k, v = qkv(rng, t=400, dtype=jnp.bfloat16)
    out = banded_attention(q, k, v, 250, 64)
    assert out.dtype == jnp.bfloat16
    ref = dense_attention(*(a.astype(jnp.float32) for a in (q, k, v)), 250)
    # bf16 probabilities (8-bit mantissa) times bf16 v, float32 accumulation: ~1% of |v|.
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=0.1, rtol=0)
    assert np.isfinite(np.asarray(out, np.float32)).all()


def run_cache(q, k, v, context, chunks, capacity, dtype=jnp.float32):
    """Feeds q, k, v [B, H, T, Dh] through the ring cache in the given chunk sizes."""
    cache = init_kv_cache(q.shape[0], capacity, q.shape[1], q.shape[3], dtype)
    outs, t0 = [], 0
    step = jax.jit(cache_attention, static_argnums=(4, 5))
    for c in chunks:
        cache, o = step(cache, q[:, :, t0:t0 + c], k[:, :, t0:t0 + c], v[:, :, t0:t0 + c],
                        context, 1.0 / math.sqrt(q.shape[3]))
        outs.append(o)
        t0 += c
    return cache, np.concatenate(outs, axis=2)


@pytest.mark.parametrize("context", [250, 5])
def test_cache_equals_offline(rng, context):
    q, k, v = qkv(rng, b=2, t=400)
    ref = np.asarray(dense_attention(q, k, v, context))
    _, one = run_cache(q, k, v, context, [1] * 400, capacity=context)
    # Same keys in a different slot order: float32 summation order only (~1e-6 relative).
    np.testing.assert_allclose(one, ref, atol=2e-5, rtol=0)
    # Random sizes from a small set: each distinct size is one compilation.
    sizes = np.random.default_rng(1).choice([1, 3, 16], 80)
    sizes = sizes[np.cumsum(sizes) <= 400].tolist()
    sizes += [1] * (400 - sum(sizes))
    cache, rand = run_cache(q, k, v, context, sizes, capacity=context + max(sizes) - 1)
    np.testing.assert_allclose(rand, ref, atol=2e-5, rtol=0)  # as above
    assert np.asarray(cache.counter).tolist() == [400, 400]


def _bf16(x):
    return x.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("b,context,chunks", [(1, 250, [1] * 300), (16, 9, [1, 3, 2] * 12)])
def test_bf16_ring_equals_attention_over_rounded_keys_and_values(rng, b, context, chunks):
    """A bf16 ring (uint16 bit patterns, read by the CPU ring kernels) == the float32
    offline attention of the same bf16-rounded keys and values; queries stay float32."""
    t = sum(chunks)
    q, k, v = qkv(rng, b=b, h=8, t=t, dh=64)
    cache, got = run_cache(q, k, v, context, chunks, context + max(chunks) - 1, jnp.bfloat16)
    assert cache.keys.dtype == jnp.uint16 and cache.values.dtype == jnp.uint16
    ref = np.asarray(dense_attention(q, _bf16(k), _bf16(v), context))
    # Same bf16 values on both sides; float32 sums in another order (~1e-6 relative, |v| ~ 2).
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    # ... and the rounding is real: the unrounded float32 attention differs by ~2^-9 |v|.
    assert np.abs(got - np.asarray(dense_attention(q, k, v, context))).max() > 1e-3


def test_bf16_ring_writes_stay_in_place(rng):
    """XLA:CPU widens bf16 scatters to float32 around the whole ring (250 ms of a 21.5 Hz
    step at batch 16) and materialises a bf16 <-> uint16 bitcast of it as a copy: the
    ring is stored as uint16, so the compiled step converts nothing of the ring's size."""
    q, k, v = qkv(rng, b=16, h=8, t=1, dh=64)
    cache = init_kv_cache(16, 250, 8, 64, jnp.bfloat16)
    step = jax.jit(cache_attention, static_argnums=(4, 5), donate_argnums=0)
    hlo = step.lower(cache, q, k, v, 250, 0.125).compile().as_text()
    ring_ops = [line for line in hlo.splitlines()
                if "[16,8,250,64]" in line and ("convert(" in line or "bitcast-convert(" in line)]
    assert ring_ops == []
    assert hlo.count("secoustic_bf16_scores") >= 1 and hlo.count("secoustic_bf16_mix") >= 1
    f32 = jax.jit(cache_attention, static_argnums=(4, 5)).lower(
        init_kv_cache(16, 250, 8, 64), q, k, v, 250, 0.125).compile().as_text()
    assert "secoustic_bf16" not in f32  # a float32 ring keeps XLA's dots


def test_cache_capacity_too_small_raises(rng):
    q, k, v = qkv(rng, t=4)
    cache = init_kv_cache(1, 250, 2, 8)
    with pytest.raises(ValueError, match="capacity 250 < context 250 \\+ chunk 4 - 1"):
        cache_attention(cache, q, k, v, 250, 0.3)


def test_reset_clears_only_selected_streams(rng):
    cache = init_kv_cache(2, 12, 2, 8)
    q, k, v = qkv(rng, b=2, t=3)
    cache, _ = cache_attention(cache, q, k, v, 10, 0.3)
    cleared = reset_kv_cache(cache, jnp.array([False, True]))
    assert np.asarray(cleared.counter).tolist() == [3, 0]
    assert (np.asarray(cleared.positions[1]) == -1).all()
    np.testing.assert_array_equal(np.asarray(cleared.positions[0]), np.asarray(cache.positions[0]))
    # The cleared stream's stale keys are invisible: its next output equals a fresh stream's.
    q2, k2, v2 = qkv(rng, b=2, t=1)
    _, out = cache_attention(cleared, q2, k2, v2, 10, 0.3)
    _, fresh = cache_attention(init_kv_cache(2, 12, 2, 8), q2, k2, v2, 10, 0.3)
    np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(fresh[1]))
    with pytest.raises(ValueError, match="reset must be"):
        reset_kv_cache(cache, jnp.array([True]))


def test_streams_reset_at_different_times_share_the_write_slot(rng):
    """Stream 1 restarts mid-batch; the ring's write slot is shared by the batch, so its
    new keys land in slots that do not follow its own positions, chunks wrap the ring, and
    each stream still equals its own offline attention."""
    context, chunks = 7, [1, 3, 2, 3, 1, 3, 3, 2, 1, 3]  # 22 tokens, capacity 9 wraps often
    q, k, v = qkv(rng, b=2, t=sum(chunks))
    restart = 9  # stream 1 starts afresh at token 9 of the batch clock (a chunk boundary)
    cache = init_kv_cache(2, context + max(chunks) - 1, q.shape[1], q.shape[3])
    step = jax.jit(cache_attention, static_argnums=(4, 5))
    outs, t0 = [], 0
    for c in chunks:
        if t0 == restart:
            cache = reset_kv_cache(cache, jnp.array([False, True]))
        cache, o = step(cache, q[:, :, t0:t0 + c], k[:, :, t0:t0 + c], v[:, :, t0:t0 + c],
                        context, 0.3)
        outs.append(np.asarray(o))
        t0 += c
    got = np.concatenate(outs, axis=2)
    assert np.asarray(cache.slot).tolist() == [22 % 9] * 2  # shared, kept through the reset
    assert np.asarray(cache.counter).tolist() == [22, 22 - restart]
    ref0 = np.asarray(dense_attention(q[:1], k[:1], v[:1], context, 0.3))
    ref1 = np.asarray(dense_attention(q[1:, :, restart:], k[1:, :, restart:],
                                      v[1:, :, restart:], context, 0.3))
    # float32, <= 7-term softmax sums in another order: ~1e-7 relative, |v| ~ 2.
    np.testing.assert_allclose(got[:1], ref0, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1:, :, restart:], ref1, atol=1e-5, rtol=0)


def test_non_finite_values_never_outlive_their_stream(rng):
    """A NaN input poisons its own outputs, but after a reset the stale slots are inert."""
    cache = init_kv_cache(1, 9, 2, 8)
    q, k, v = qkv(rng, t=4)
    # A NaN input frame gives NaN keys and values at its position.
    cache, out = cache_attention(cache, q, k.at[:, :, 1].set(jnp.nan),
                                 v.at[:, :, 1].set(jnp.nan), 6, 0.3)
    assert np.isnan(np.asarray(out[:, :, 1:])).all()  # the poisoned stream sees its NaN
    assert np.isfinite(np.asarray(out[:, :, :1])).all()
    cache = reset_kv_cache(cache, jnp.array([True]))
    q2, k2, v2 = qkv(rng, t=2)
    _, out = cache_attention(cache, q2, k2, v2, 6, 0.3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(dense_attention(q2, k2, v2, 6, 0.3)),
                               atol=1e-6, rtol=0)  # float32, 2-term sums
