"""The bf16 mat-vec custom call (secoustic_jax.kernels) against a float64 reference."""

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
    w = jnp.asarray(rng.standard_normal((k, n)).astype(np.float32)).astype(jnp.bfloat16)
    y = np.asarray(jax.jit(kernels.bf16_matvec)(x, w))
    ref, scale = _reference(x, w)
    # Sequential float32 fma accumulation over k terms: |error| <= k * eps * (|x| @ |w|).
    assert y.dtype == np.float32 and y.shape == (m, n)
    assert np.all(np.abs(y - ref) <= k * EPS * scale + 1e-30)
    # ... and it is not the float32 product of unrounded weights: the bf16 values are used.
    assert np.abs(ref - x.astype(np.float64) @ np.asarray(w, np.float64)).max() == 0.0


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
