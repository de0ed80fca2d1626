"""FSQ: closed-form index checks, round trips, STE, float32 under bf16, goldens."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.config.model import FSQConfig
from secoustic_jax.quantizer.fsq import (FSQ, bound, codes_to_indices, implicit_codebook,
                                         indices_to_codes, quantize, round_ste)

L3 = (3,) * 8


def test_closed_form_indices():
    assert int(codes_to_indices(jnp.zeros(8), L3)) == 3280  # (3^8 - 1) / 2
    assert int(codes_to_indices(-jnp.ones(8), L3)) == 0
    assert int(codes_to_indices(jnp.ones(8), L3)) == 6560
    # dimension 0 is the least significant digit
    assert int(codes_to_indices(jnp.array([1.0] + [0.0] * 7), L3)) == 3281
    assert int(codes_to_indices(jnp.array([0.0] * 7 + [1.0]), L3)) == 3280 + 2187


@pytest.mark.parametrize("levels", [L3, (8, 5, 5, 5), (4, 3, 2), (7, 6)])
def test_all_indices_round_trip(levels):
    n = int(np.prod(levels))
    codes = implicit_codebook(levels)
    assert codes.shape == (n, len(levels)) and codes.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(codes_to_indices(codes, levels)), np.arange(n))
    # quantize() of a code's pre-image gives back that code and index
    half_width = np.asarray(levels) // 2
    lv = np.asarray(levels, np.float64)
    half_l = (lv - 1) * 0.999 / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    target = np.asarray(codes) * half_width  # the rounded bound values
    # Step 0.3 towards the centre -offset of the bound's open range: same rounding, reachable.
    target = target + 0.3 * np.sign(-offset - target)
    u = np.arctanh((target + offset) / half_l) - np.tan(offset / half_l)
    q_codes, idx = quantize(jnp.asarray(u, jnp.float32), levels)
    np.testing.assert_array_equal(np.asarray(idx), np.arange(n))
    np.testing.assert_array_equal(np.asarray(q_codes), np.asarray(codes))


def test_bound_l3_and_even_levels():
    u = jnp.linspace(-4, 4, 101)[:, None] * jnp.ones((1, 2))
    np.testing.assert_allclose(np.asarray(bound(u, (3, 3))), 0.999 * np.tanh(np.asarray(u)),
                               atol=1e-7)  # float32 tanh vs float64
    b = np.asarray(bound(u, (4, 2)))
    assert b[:, 0].min() > -2 and b[:, 0].max() < 1  # rounds into {-2, -1, 0, 1}
    assert b[:, 1].min() > -1 and b[:, 1].max() < 0.5  # rounds into {-1, 0}
    assert abs(float(bound(jnp.zeros((1, 2)), (4, 2))[0, 0])) < 1e-3  # zero stays near 0


def test_ste_gradient_is_identity(rng):
    x = jnp.asarray(rng.standard_normal(50) * 2, jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.grad(lambda x: round_ste(x).sum())(x)), 1.0)
    u = jnp.asarray(rng.standard_normal((5, 8)), jnp.float32)
    g_codes = jax.grad(lambda u: (quantize(u, L3)[0] * jnp.arange(8.0)).sum())(u)
    g_bound = jax.grad(lambda u: (bound(u, L3) * jnp.arange(8.0)).sum())(u)
    np.testing.assert_array_equal(np.asarray(g_codes), np.asarray(g_bound))


def test_float32_under_bf16(rng):
    # Values spread around the L = 3 rounding threshold atanh(0.5 / 0.999) ~ 0.549974.
    u = rng.choice([-1, 1], (4096, 8)) * (0.549974 + rng.standard_normal((4096, 8)) * 0.01)
    u_bf16 = jnp.asarray(u, jnp.bfloat16)
    codes, idx = quantize(u_bf16, L3)
    ref_codes, ref_idx = quantize(u_bf16.astype(jnp.float32), L3)
    assert codes.dtype == jnp.float32 and idx.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
    # The module path: bf16 mu is projected in float32 too.
    fsq = FSQ(FSQConfig(dim=16))
    mu = jnp.asarray(rng.standard_normal((64, 16)) * 8, jnp.bfloat16)
    v = fsq.init(jax.random.PRNGKey(0), mu)
    out = fsq.apply(v, mu)
    out32 = fsq.apply(v, mu.astype(jnp.float32))
    assert out.projected.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(out32.indices))
    assert len(np.unique(np.asarray(out.indices))) > 10  # the check is not vacuous


def test_module_layout_and_methods(rng):
    fsq = FSQ(FSQConfig(dim=512))
    boxed = fsq.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 512)))["params"]
    assert boxed["project_in"]["kernel"].names == ("embed", "code")
    params = nn.meta.unbox(boxed)
    shapes = jax.tree.map(lambda x: x.shape, params)
    assert shapes == {"project_in": {"kernel": (512, 8), "bias": (8,)},
                      "project_out": {"kernel": (8, 512), "bias": (512,)}}
    assert sum(x.size for x in jax.tree.leaves(params)) == 8_712  # model.md §12
    assert np.abs(params["project_in"]["kernel"]).max() <= 1 / np.sqrt(512)  # torch fan_in
    assert np.abs(params["project_out"]["bias"]).max() <= 1 / np.sqrt(8)
    idx = jnp.asarray(rng.integers(0, 6561, (2, 5)), jnp.int32)
    s = fsq.apply({"params": params}, idx, method="decode")
    codes = indices_to_codes(idx, L3)
    expect = codes @ params["project_out"]["kernel"] + params["project_out"]["bias"]
    np.testing.assert_allclose(np.asarray(s), np.asarray(expect), atol=1e-6)  # same matmul
    with pytest.raises(ValueError, match="levels"):
        quantize(jnp.zeros(2), (3, 1))


def test_matches_official_golden(golden_dir):
    """Official project_in / quantize / indices / project_out on the golden arrays."""
    from safetensors.numpy import load_file

    sd = load_file(golden_dir / "codec_tiny_86hz.safetensors")
    io = np.load(golden_dir / "codec_tiny_86hz_io.npz")
    params = {name: {"kernel": sd[f"fsq.{name}.weight"].T, "bias": sd[f"fsq.{name}.bias"]}
              for name in ("project_in", "project_out")}
    fsq, v = FSQ(FSQConfig(dim=512)), {"params": params}
    codes, idx = quantize(jnp.asarray(io["fsq_projected"]), L3)
    np.testing.assert_array_equal(np.asarray(codes), io["fsq_codes"])
    np.testing.assert_array_equal(np.asarray(idx), io["tokens"])
    u = fsq.apply(v, jnp.asarray(io["semantic_mu"]), method="project")
    np.testing.assert_allclose(np.asarray(u), io["fsq_projected"], atol=1e-5)  # 512-term f32 dot
    s = fsq.apply(v, jnp.asarray(io["tokens"]), method="decode")
    np.testing.assert_allclose(np.asarray(s), io["fsq_decoded"], atol=1e-6)  # 8-term f32 dot
