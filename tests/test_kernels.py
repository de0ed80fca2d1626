"""The CPU custom calls (secoustic_jax.kernels: bf16 mat-vec, bf16 ring scores / mix)
against float64 references of the same bf16 values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax import kernels

EPS = 2.0 ** -24  # float32 unit roundoff


def _reference(x, w_bf16):
    """float64 x @ w with w's exact bf16 values, and the |x| @ |w| scale of the bound."""
    w64 = np.asarray(w_bf16.astype(jnp.float32), np.float64)
    x64 = np.asarray(x, np.float64)
    return x64 @ w64, np.abs(x64) @ np.abs(w64)


@pytest.mark.parametrize("m,k,n", [(1, 512, 2048), (1, 2048, 512), (2, 37, 101),
                                   (3, 5, 16), (4, 64, 17), (7, 1, 1)])
def test_matches_float64_within_the_summation_bound(m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w32 = rng.standard_normal((k, n)).astype(np.float32)
    w = jnp.asarray(w32).astype(jnp.bfloat16)
    y = np.asarray(jax.jit(kernels.bf16_matvec)(x, w))
    ref, scale = _reference(x, w)
    # Sequential float32 fma accumulation over k terms: |error| <= k * eps * (|x| @ |w|).
    assert y.dtype == np.float32 and y.shape == (m, n)
    assert np.all(np.abs(y - ref) <= k * EPS * scale + 1e-30)
    # ... and the bf16 values are what it multiplies: against the unrounded float32
    # weights it is off by the bf16 rounding (~2^-9 relative), far outside that bound.
    unrounded = x.astype(np.float64) @ w32.astype(np.float64)
    if k > 1:
        assert np.any(np.abs(y - unrounded) > k * EPS * scale + 1e-30)


def test_leading_dims_tails_and_determinism():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)  # 40: not a multiple of 16
    w = jnp.asarray(rng.standard_normal((40, 33)).astype(np.float32)).astype(jnp.bfloat16)
    f = jax.jit(kernels.bf16_matvec)
    y1, y2 = np.asarray(f(x, w)), np.asarray(f(x, w))
    assert y1.shape == (2, 3, 33)
    np.testing.assert_array_equal(y1, y2)  # deterministic, bit for bit
    # Row (i, j) of a batched call equals the same row alone (no cross-row mixing).
    single = np.asarray(f(x[1, 2][None], w))[0]
    np.testing.assert_array_equal(y1[1, 2], single)
    ref, scale = _reference(x.reshape(-1, 40), w)
    assert np.all(np.abs(y1.reshape(-1, 33) - ref) <= 40 * EPS * scale + 1e-30)


def test_non_finite_inputs_propagate():
    x = np.ones((1, 16), np.float32)
    x[0, 3] = np.nan
    w = jnp.ones((16, 20), jnp.bfloat16)
    assert np.all(np.isnan(np.asarray(kernels.bf16_matvec(x, w))))


def test_bad_operands_are_refused():
    x = jnp.ones((1, 8), jnp.float32)
    with pytest.raises(ValueError, match="bf16"):
        kernels.bf16_matvec(x, jnp.ones((8, 4), jnp.float32))
    with pytest.raises(ValueError, match="contract"):
        kernels.bf16_matvec(x, jnp.ones((9, 4), jnp.bfloat16))


def test_library_name_tracks_source_and_build_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("SECOUSTIC_KERNEL_DIR", str(tmp_path))
    path = kernels.library_path()
    assert path.parent == tmp_path and not path.exists()
    built = kernels.build()
    assert built == path and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    mtime = path.stat().st_mtime_ns
    assert kernels.build() == path and path.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SECOUSTIC_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match=r"cannot run the C\+\+ compiler .*no-such-compiler"):
        kernels.build()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_batched_rows_equal_single_rows_bit_for_bit():
    """M >= 2 takes the threaded register-tiled path, M = 1 the row-stream path: both
    accumulate each element in k order with one fma per term, so rows agree exactly."""
    rng = np.random.default_rng(5)
    for m, k, n in [(16, 512, 2048), (5, 2048, 512), (3, 64, 150)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = jnp.asarray(rng.standard_normal((k, n)).astype(np.float32)).astype(jnp.bfloat16)
        f = jax.jit(kernels.bf16_matvec)
        batched = np.asarray(f(x, w))
        rows = np.concatenate([np.asarray(f(x[i:i + 1], w)) for i in range(m)])
        np.testing.assert_array_equal(batched, rows)
        np.testing.assert_array_equal(batched, np.asarray(f(x, w)))  # threads: deterministic
        ref, scale = _reference(x, w)
        assert np.all(np.abs(batched - ref) <= k * EPS * scale + 1e-30)


def _ring(rng, g, c, d):
    """A bf16 ring [g, c, d] and its exact values in float64."""
    r = jnp.asarray(rng.standard_normal((g, c, d)).astype(np.float32)).astype(jnp.bfloat16)
    return r, np.asarray(r.astype(jnp.float32), np.float64)


# (G, c, C, D): streaming shapes (8 heads x batch 1 / 16, threaded above 2^18 ring
# elements), several queries per step, and tails that are not multiples of 16 lanes.
RING_SHAPES = [(8, 1, 250, 64), (128, 1, 250, 64), (6, 3, 37, 40), (2, 5, 7, 16), (3, 2, 4, 3)]


@pytest.mark.parametrize("g,c,cap,d", RING_SHAPES)
def test_ring_scores_and_mix_match_float64(g, c, cap, d):
    rng = np.random.default_rng(g * 100 + c * 10 + d)
    q = rng.standard_normal((g, c, d)).astype(np.float32)
    k, k64 = _ring(rng, g, cap, d)
    s = np.asarray(jax.jit(kernels.bf16_scores)(q, k))
    ref = np.einsum("gid,gtd->git", q.astype(np.float64), k64)
    bound = np.einsum("gid,gtd->git", np.abs(q.astype(np.float64)), np.abs(k64))
    # float32 sums of d terms (16-lane partials + a reduction tree): <= d eps sum |q||k|.
    assert s.shape == (g, c, cap) and s.dtype == np.float32
    assert np.all(np.abs(s - ref) <= d * EPS * bound + 1e-30)
    p = rng.random((g, c, cap)).astype(np.float32)
    v, v64 = _ring(rng, g, cap, d)
    o = np.asarray(jax.jit(kernels.bf16_mix)(p, v))
    ref = np.einsum("git,gtd->gid", p.astype(np.float64), v64)
    bound = np.einsum("git,gtd->gid", p.astype(np.float64), np.abs(v64))
    # Sequential float32 fma over the cap ring slots.
    assert o.shape == (g, c, d) and o.dtype == np.float32
    assert np.all(np.abs(o - ref) <= cap * EPS * bound + 1e-30)


def test_ring_kernels_are_per_group_deterministic_and_take_uint16_bits():
    rng = np.random.default_rng(9)
    q = rng.standard_normal((128, 1, 64)).astype(np.float32)
    k, _ = _ring(rng, 128, 250, 64)
    bits = jax.lax.bitcast_convert_type(k, jnp.uint16)
    s = np.asarray(kernels.bf16_scores(q, k))
    np.testing.assert_array_equal(s, np.asarray(kernels.bf16_scores(q, bits)))
    # Group 77 alone (single-threaded) equals group 77 of the threaded call.
    np.testing.assert_array_equal(s[77], np.asarray(kernels.bf16_scores(q[77:78], k[77:78]))[0])
    p = jax.nn.softmax(jnp.asarray(s), axis=-1)
    o = np.asarray(kernels.bf16_mix(p, bits))
    np.testing.assert_array_equal(o, np.asarray(kernels.bf16_mix(p, k)))
    np.testing.assert_array_equal(o[5], np.asarray(kernels.bf16_mix(p[5:6], bits[5:6]))[0])


def test_ring_kernels_refuse_bad_operands():
    q = jnp.ones((2, 1, 8), jnp.float32)
    with pytest.raises(ValueError, match="bf16"):
        kernels.bf16_scores(q, jnp.ones((2, 5, 8), jnp.float32))
    with pytest.raises(ValueError, match="contract"):
        kernels.bf16_scores(q, jnp.ones((2, 5, 9), jnp.bfloat16))
    with pytest.raises(ValueError, match="contract"):
        kernels.bf16_mix(jnp.ones((3, 1, 5), jnp.float32), jnp.ones((2, 5, 8), jnp.bfloat16))


@pytest.mark.parametrize("m,k,n", [(1, 512, 2048), (16, 2048, 512), (3, 37, 101)])
def test_int8_matvec_matches_float64_and_batches_bit_for_bit(m, k, n):
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    q = jnp.asarray(rng.integers(-127, 128, (k, n)), jnp.int8)
    scale = jnp.asarray(rng.uniform(1e-3, 2e-2, n), jnp.float32)
    f = jax.jit(kernels.int8_matvec)
    y = np.asarray(f(x, q, scale))
    q64, s64, x64 = (np.asarray(a, np.float64) for a in (q, scale, x))
    ref = (x64 @ q64) * s64
    # k-term float32 fma sum (exact integers times x), then one rounding for the scale.
    bound = (k * EPS * (np.abs(x64) @ np.abs(q64)) + EPS * np.abs(x64 @ q64)) * s64
    assert y.shape == (m, n) and np.all(np.abs(y - ref) <= bound + 1e-30)
    rows = np.concatenate([np.asarray(f(x[i:i + 1], q, scale)) for i in range(m)])
    np.testing.assert_array_equal(y, rows)


def test_int8_matvec_refuses_bad_operands():
    x = jnp.ones((1, 8), jnp.float32)
    q = jnp.ones((8, 4), jnp.int8)
    with pytest.raises(ValueError, match="int8"):
        kernels.int8_matvec(x, q.astype(jnp.float32), jnp.ones(4))
    with pytest.raises(ValueError, match="scale must be"):
        kernels.int8_matvec(x, q, jnp.ones(5))
    with pytest.raises(ValueError, match="contract"):
        kernels.int8_matvec(jnp.ones((1, 9)), q, jnp.ones(4))
