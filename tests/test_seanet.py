"""SEANet encoder/decoder: names, parameter counts, lengths, causality, streaming, goldens."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import SEANetConfig, codec_preset
from secoustic_jax.layers.seanet import (SEANetDecoder, SEANetEncoder, decoder_plan,
                                         encoder_plan)

KEY = jax.random.PRNGKey(0)
# float32 convs, different summation order between offline and chunked calls.
STREAM_ATOL = 2e-5


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(tree)))


def _shapes(cfg, dec=False, length=8):
    module = SEANetDecoder(cfg) if dec else SEANetEncoder(cfg)
    x = jnp.zeros((1, length, cfg.dimension if dec else cfg.channels))
    return jax.eval_shape(module.init, KEY, x)["params"]


@pytest.mark.parametrize("variant,enc,dec", [("86hz", 553_184, 1_056_560),
                                             ("21_5hz", 635_104, 1_138_480)])
def test_param_counts(variant, enc, dec):
    cfg = codec_preset(variant).seanet
    assert _count(_shapes(cfg)) == enc  # model.md §12
    assert _count(_shapes(cfg, dec=True)) == dec


@pytest.mark.parametrize("variant,tsv", [("86hz", "official_state_dict_86hz.tsv"),
                                         ("21_5hz", "official_state_dict_21_5hz.tsv")])
def test_names_and_shapes_match_official_keys(variant, tsv, reference_dir):
    """Every official encoder/decoder key maps to one Flax param with the converted shape."""
    official = {}
    for line in (reference_dir / tsv).read_text().splitlines():
        key, shape, _ = line.split("\t")
        if key.startswith(("encoder.model.", "decoder.model.")):
            official[key] = tuple(int(v) for v in shape.strip("[]").split(", "))
    cfg = codec_preset(variant).seanet
    ours = {}
    for prefix, dec in (("encoder", False), ("decoder", True)):
        flat = nn.meta.unbox(_shapes(cfg, dec))
        for path, leaf in jax.tree_util.tree_flatten_with_path(flat)[0]:
            names = [p.key for p in path]
            idx = names[0].split("_")[1]
            kind = "convtr.convtr" if (dec and idx in ("2", "5")) else "conv.conv"
            mid = f"block.{names[1].split('_')[1]}." if len(names) == 3 else ""
            tname = "weight" if names[-1] == "kernel" else "bias"
            shape = leaf.shape
            if tname == "weight":  # [k, in, out] -> torch [out, in, k] or transposed [in, out, k]
                shape = (shape[1], shape[2], shape[0]) if "convtr" in kind else shape[::-1]
            ours[f"{prefix}.model.{idx}.{mid}{kind}.{tname}"] = shape
    assert ours == official


def test_lengths_21_5hz():
    cfg = codec_preset("21_5hz").seanet
    enc = SEANetEncoder(cfg)
    x = jnp.zeros((1, 861, 80))
    variables = jax.eval_shape(enc.init, KEY, x)
    out, inter = jax.eval_shape(
        lambda v, x: enc.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables, x)
    assert inter["intermediates"]["layer_3"]["__call__"][0].shape == (1, 431, 128)
    assert out.shape == (1, 216, 512)  # model.md §3: 861 -> 431 -> 216
    dec = SEANetDecoder(cfg)
    z = jnp.zeros((1, 216, 512))
    mel = jax.eval_shape(lambda v: dec.apply(v, z), jax.eval_shape(dec.init, KEY, z))
    assert mel.shape == (1, 864, 80)  # 4 * ceil(861 / 4)


@pytest.mark.parametrize("ratios,t", [((2, 2), 5), ((1, 1), 20)])
def test_encoder_causality(ratios, t, rng):
    cfg = codec_preset("tiny").seanet.__class__(**{**codec_preset("tiny").seanet.__dict__,
                                                   "ratios": ratios})
    enc = SEANetEncoder(cfg)
    mel = jnp.asarray(rng.standard_normal((1, 40, cfg.channels)), jnp.float32)
    variables = enc.init(KEY, mel)
    grad = np.asarray(jax.jit(jax.grad(lambda m: enc.apply(variables, m)[0, t].sum()))(mel))[0]
    per_frame = np.abs(grad).sum(-1)
    last = cfg.hop * t + cfg.hop - 1  # 21.5 Hz: token t sees mel frames <= 4t+3
    assert np.all(per_frame[last + 1:] == 0)
    assert per_frame[last] > 0
    if cfg.hop == 1:  # receptive field: 14 past frames (6 + 2 + 1 + 2 + 1 + 2)
        assert np.all(per_frame[: t - 14] == 0) and per_frame[t - 14] > 0


@pytest.mark.parametrize("preset", ["tiny", "tiny_21_5hz"])
def test_decoder_causality(preset, rng):
    cfg = codec_preset(preset).seanet
    dec = SEANetDecoder(cfg)
    z = jnp.asarray(rng.standard_normal((1, 12, cfg.dimension)), jnp.float32)
    variables = dec.init(KEY, z)
    n = 4 * cfg.hop + 1  # mel frame n is final once token n // hop is decoded
    grad = np.abs(np.asarray(jax.jit(jax.grad(lambda z: dec.apply(variables, z)[0, n].sum()))(z)))
    per_token = grad[0].sum(-1)
    assert np.all(per_token[n // cfg.hop + 1:] == 0) and per_token[n // cfg.hop] > 0


def _chunks(rng, total, multiple):
    sizes, left = [], total
    while left > 0:
        n = min(left - left % multiple, multiple * int(rng.integers(0, 4)))
        if left < multiple:
            break
        sizes.append(n)
        left -= n
    return sizes


@pytest.mark.parametrize("preset,length", [("tiny_21_5hz", 47),
                                           ("tiny_21_5hz", 44), ("tiny", 23)])
def test_streaming_equals_offline(preset, length, rng):
    cfg = codec_preset(preset).seanet
    enc, dec = SEANetEncoder(cfg), SEANetDecoder(cfg)
    mel = jnp.asarray(rng.standard_normal((2, length, cfg.channels)), jnp.float32)
    ve = enc.init(KEY, mel)
    z_off = np.asarray(enc.apply(ve, mel))
    enc_step = jax.jit(functools.partial(enc.apply, method="step"))
    state, zs, pos = enc.init_state(2), [], 0
    for n in _chunks(rng, length, cfg.hop):
        state, z = enc_step(ve, state, mel[:, pos:pos + n])
        zs.append(np.asarray(z))
        pos += n
    state, z = enc.apply(ve, state, mel[:, pos:], method="flush")  # tail < hop frames
    zs.append(np.asarray(z))
    z_stream = np.concatenate(zs, axis=1)
    assert z_stream.shape == z_off.shape == (2, -(-length // cfg.hop), cfg.dimension)
    np.testing.assert_allclose(z_stream, z_off, atol=STREAM_ATOL)

    vd = dec.init(KEY, jnp.asarray(z_off))
    mel_off = np.asarray(dec.apply(vd, jnp.asarray(z_off)))
    dec_step = jax.jit(functools.partial(dec.apply, method="step"))
    state, outs, pos = dec.apply(vd, 2, method="init_state"), [], 0
    for n in _chunks(rng, z_off.shape[1], 1):
        state, m = dec_step(vd, state, jnp.asarray(z_off[:, pos:pos + n]))
        outs.append(np.asarray(m))
        pos += n
    np.testing.assert_allclose(np.concatenate(outs, axis=1), mel_off, atol=STREAM_ATOL)


def test_step_rejects_partial_chunk():
    cfg = codec_preset("tiny_21_5hz").seanet
    enc = SEANetEncoder(cfg)
    v = enc.init(KEY, jnp.zeros((1, 8, cfg.channels)))
    with pytest.raises(ValueError, match="multiple of hop 4"):
        enc.apply(v, enc.init_state(1), jnp.zeros((1, 6, cfg.channels)), method="step")


def test_config_generalisation_and_validation(rng):
    base = codec_preset("tiny").seanet.__dict__
    cfg = SEANetConfig(**{**base, "n_residual_layers": 2, "ratios": (2, 1)})
    names = [s.name for s in encoder_plan(cfg)]
    assert names == ["layer_0", "layer_1", "layer_2", "layer_4", "layer_5", "layer_6",
                     "layer_8", "layer_10"]
    assert [s.dilation for s in encoder_plan(cfg) if s.kind == "res"] == [1, 2, 1, 2]
    assert [s.stride for s in decoder_plan(cfg) if s.kind == "convtr"] == [2, 1]
    # moshi's encoder walks the ratios reversed: stride 1 first, then stride 2.
    assert [s.stride for s in encoder_plan(cfg) if s.stride > 1 or s.kernel == 2] == [1, 2]
    enc = SEANetEncoder(cfg)
    mel = jnp.asarray(rng.standard_normal((1, 10, cfg.channels)), jnp.float32)
    v = enc.init(KEY, mel)
    state, z = enc.apply(v, enc.init_state(1), mel, method="step")
    np.testing.assert_allclose(np.asarray(z), np.asarray(enc.apply(v, mel)), atol=STREAM_ATOL)
    for bad in ({"n_residual_layers": -1}, {"dilation_base": 0}, {"ratios": (0, 2)}):
        with pytest.raises(ConfigError):
            encoder_plan(SEANetConfig(**{**base, **bad}))


def _seanet_from_torch(sd, prefix, plan):
    """Local converter (the real one lives in checkpoint/): torch SEANet keys -> Flax params."""
    params = {}
    for spec in plan:
        i = spec.name.split("_")[1]
        if spec.kind == "res":
            params[spec.name] = {
                f"block_{j}": {"kernel": sd[f"{prefix}.model.{i}.block.{j}.conv.conv.weight"]
                               .transpose(2, 1, 0),
                               "bias": sd[f"{prefix}.model.{i}.block.{j}.conv.conv.bias"]}
                for j in (1, 3)}
        elif spec.kind == "convtr":  # torch [in, out, k] -> [k, in, out], unflipped
            w = sd[f"{prefix}.model.{i}.convtr.convtr.weight"]
            params[spec.name] = {"kernel": w.transpose(2, 0, 1),
                                 "bias": sd[f"{prefix}.model.{i}.convtr.convtr.bias"]}
        else:  # torch [out, in, k] -> [k, in, out]
            w = sd[f"{prefix}.model.{i}.conv.conv.weight"]
            params[spec.name] = {"kernel": w.transpose(2, 1, 0),
                                 "bias": sd[f"{prefix}.model.{i}.conv.conv.bias"]}
    return params


@pytest.mark.parametrize("variant,atol", [("86hz", 7e-6), ("21_5hz", 6e-6)])
def test_encoder_matches_official_golden(variant, atol, golden_dir):
    """z = official SEANet encoder output (atol: golden README, ~10x float32 noise)."""
    from safetensors.numpy import load_file

    sd = load_file(golden_dir / "codec_tiny_86hz.safetensors")
    if variant == "21_5hz":
        sd.update(load_file(golden_dir / "codec_tiny_21_5hz_resample.safetensors"))
    io = np.load(golden_dir / f"codec_tiny_{variant}_io.npz")
    cfg = codec_preset(variant).seanet
    params = _seanet_from_torch(sd, "encoder", encoder_plan(cfg))
    z = SEANetEncoder(cfg).apply({"params": params}, jnp.asarray(io["mel_in"]))
    assert z.shape == io["z"].shape
    np.testing.assert_allclose(np.asarray(z), io["z"], atol=atol)
