"""HiFT model and name table: parameter count, official key layout, exact round trip,
weight-norm axes, receptive field, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from secoustic_jax.checkpoint.hift_names import hift_table
from secoustic_jax.checkpoint.table import (CheckpointError, export_state_dict,
                                            import_state_dict, read_key_tsv)
from secoustic_jax.checkpoint.torch_io import load_state_dict
from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.hift import HiFTConfig, hift_preset, hift_tiny
from secoustic_jax.layers.hift_blocks import WNConvTranspose1d
from secoustic_jax.tree import flatten
from secoustic_jax.model import hift_source as dsp
from secoustic_jax.model.hift import HiFT, receptive_field_frames

# model.md §12: g and v counted separately, as the official model does.
PART_COUNTS = {"f0_predictor": 3_274_241, "conv_pre": 287_744, "ups": 2_622_592,
               "source_downs": 76_416, "source_resblocks": 3_840_768,
               "resblocks": 10_342_656, "conv_post": 16_164, "m_source": 10}


def _shapes(cfg):
    fn = lambda: meta.unbox(HiFT(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 80))))
    return jax.eval_shape(fn)


def test_default_parameter_count_is_official():
    flat = flatten(_shapes(HiFTConfig()))
    assert sum(int(np.prod(s.shape)) for s in flat.values()) == 20_460_591
    for part, count in PART_COUNTS.items():
        got = sum(int(np.prod(s.shape)) for p, s in flat.items() if p[1].startswith(part + "_")
                  or p[1] == part)
        assert got == count, part


def test_tiny_parameter_count_matches_golden():
    flat = flatten(_shapes(hift_tiny()))
    assert sum(int(np.prod(s.shape)) for s in flat.values()) == 378_543  # golden README §2


def test_table_matches_official_tsv_and_model(reference_dir):
    rows = read_key_tsv(reference_dir / "hift_state_dict.tsv")
    table = hift_table(HiFTConfig())
    assert len(table) == 227
    assert [(e.torch_key, e.torch_shape, e.dtype) for e in table] == rows
    assert {e.path for e in table} == set(flatten(_shapes(HiFTConfig())))


def test_export_of_default_model_has_official_keys_and_exact_round_trip(reference_dir, rng):
    rows = read_key_tsv(reference_dir / "hift_state_dict.tsv")
    sd = {k: rng.standard_normal(s).astype(np.float32) for k, s, _ in rows}
    table = hift_table(HiFTConfig())
    out = export_state_dict(table, import_state_dict(table, sd))
    assert [(k, tuple(v.shape), str(v.dtype)) for k, v in out.items()] == rows
    for k in sd:
        np.testing.assert_array_equal(out[k], sd[k])


def test_golden_import_export_import_is_bit_exact(golden_dir):
    sd, _ = load_state_dict(golden_dir / "hift_tiny.safetensors")
    table = hift_table(hift_tiny())
    v1 = import_state_dict(table, sd)
    out = export_state_dict(table, v1)
    assert set(out) == set(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(out[k], sd[k])
    v2 = import_state_dict(table, out)
    for p, a in flatten(v1).items():
        np.testing.assert_array_equal(flatten(v2)[p], a)


def test_strict_import_names_the_problem(golden_dir):
    sd, _ = load_state_dict(golden_dir / "hift_tiny.safetensors")
    sd = dict(sd)
    del sd["ups.1.parametrizations.weight.original0"]
    sd["conv_post.bias"] = sd["conv_post.bias"][:3]
    with pytest.raises(CheckpointError, match="ups.1.parametrizations.weight.original0") as e:
        import_state_dict(hift_table(hift_tiny()), sd, what="hift")
    assert "conv_post.bias: shape [3]" in str(e.value)


def test_conv_transpose_weight_norm_is_over_the_input_channel(rng):
    """ConvTranspose1d g is [in]: the norm runs over (k, out) of each input channel; and the
    layer equals torch's ConvTranspose1d(k16, s8, p4) with the folded weight."""
    torch = pytest.importorskip("torch")
    cin, cout, k, s, p = 6, 4, 16, 8, 4
    v = rng.standard_normal((cin, cout, k)).astype(np.float32)
    g = rng.uniform(0.5, 1.5, (cin, 1, 1)).astype(np.float32)
    x = rng.standard_normal((2, 5, cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(cin, cout, k, s, p))
    with torch.no_grad():
        conv.parametrizations.weight.original0.copy_(torch.from_numpy(g))
        conv.parametrizations.weight.original1.copy_(torch.from_numpy(v))
        conv.bias.copy_(torch.from_numpy(b))
        ref = conv(torch.from_numpy(x.transpose(0, 2, 1))).numpy().transpose(0, 2, 1)
    params = {"params": {"weight_v": v.transpose(2, 0, 1), "weight_g": g[:, 0, 0], "bias": b}}
    got = WNConvTranspose1d(cout, k, s, p).apply(params, jnp.asarray(x))
    assert got.shape == (2, 5 * s, cout)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=1e-5)  # float32 sums of 16 taps


def test_decode_receptive_field_bound(golden_dir):
    """A mel change at frame t moves `decode` output only within receptive_field_frames."""
    cfg = hift_tiny()
    sd, _ = load_state_dict(golden_dir / "hift_tiny.safetensors")
    variables = import_state_dict(hift_table(cfg), sd)
    mel = jnp.asarray(np.load(golden_dir / "hift_tiny_io.npz")["mel_in"][:1, :100])
    s = jnp.zeros((1, 256 * 100))
    fn = jax.jit(lambda m: HiFT(cfg).apply(variables, m, s, method="decode"))
    t = 50
    diff = np.abs(np.asarray(fn(mel.at[:, t].add(1.0)) - fn(mel)))[0]
    changed = np.nonzero(diff > 0)[0]
    r = receptive_field_frames(cfg)
    assert changed.size and changed.min() >= 256 * (t - r) and changed.max() < 256 * (t + 1 + r)
    assert changed.max() - changed.min() > 256 * r  # the bound is not vacuous: same order
    assert receptive_field_frames(HiFTConfig()) == r  # width does not change geometry


def test_noise_and_phases_are_keyed():
    key = jax.random.PRNGKey(1)
    fn = jax.jit(dsp.block_noise, static_argnums=(1, 3, 4))
    n = fn(key, 1, 5000, 3000, 9)
    whole = fn(key, 1, 0, 9000, 9)
    np.testing.assert_array_equal(np.asarray(n), np.asarray(whole)[:, 5000:8000])
    phi = np.asarray(dsp.random_phases(key, 3, 9))
    assert (phi[:, 0] == 0).all() and (np.abs(phi) <= np.pi).all() and np.unique(phi).size > 20


def test_stft_istft_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 1024)).astype(np.float32)
    w = torch.hann_window(16, periodic=True)
    spec = torch.stft(torch.from_numpy(x), 16, 4, 16, window=w, return_complex=True)
    ref = np.concatenate([spec.real.numpy(), spec.imag.numpy()], 1).transpose(0, 2, 1)
    got = np.asarray(dsp.stft(jnp.asarray(x), 16, 4))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)  # 16-term float32 DFT sums
    back = np.asarray(dsp.istft(jnp.asarray(ref), 16, 4))
    np.testing.assert_allclose(back, torch.istft(spec, 16, 4, 16, window=w).numpy(), atol=1e-5)


def test_config_presets_and_validation():
    assert hift_preset("tiny") == hift_tiny()
    c = HiFTConfig()
    assert c.hop_length == 256 and c.num_sines == 9 and c.source_down_geometry(0) == (16, 8, 4)
    assert c.source_down_geometry(1) == (1, 1, 0)
    with pytest.raises(ConfigError):
        HiFTConfig(upsample_kernel_sizes=(15, 16))
    with pytest.raises(ConfigError):
        hift_preset("huge")
