"""The Codec facade and the model contract: structure, persistence, batching, errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.api import Codec, bucket_length, expected_leaves, init_variables, prompt_crop
from secoustic_jax.checkpoint.codec_names import codec_table, parameter_count
from secoustic_jax.checkpoint.convert import import_codec_state_dict
from secoustic_jax.checkpoint.table import TRANSFORMS, CheckpointError
from secoustic_jax.tree import flatten
from secoustic_jax.config import ConfigError, codec_preset, golden_tiny


def _shapes(cfg):
    return {p: shape for p, (shape, _) in expected_leaves(cfg).items()}


@pytest.mark.parametrize("preset,count", [("86hz", 103_321_304), ("21_5hz", 103_485_144)])
def test_full_preset_parameter_counts_and_tree(preset, count):
    cfg = codec_preset(preset)
    shapes = _shapes(cfg)
    assert sum(int(np.prod(s)) for p, s in shapes.items() if p[0] == "params") == count
    assert parameter_count(cfg) == count
    # every leaf is claimed by exactly one table row, with the transformed torch shape
    table = codec_table(cfg)
    assert {e.path for e in table} == set(shapes)
    for e in table:
        flax_shape = TRANSFORMS[e.transform].to_flax(np.zeros(e.torch_shape, np.int8)).shape
        assert shapes[e.path] == flax_shape, e.torch_key


@pytest.mark.parametrize("preset", ["tiny", "tiny_21_5hz"])
def test_tiny_tree_matches_table(preset):
    cfg = codec_preset(preset)
    assert {e.path for e in codec_table(cfg)} == set(_shapes(cfg))


def test_package_import_is_lazy():
    code = ("import sys, secoustic_jax; assert 'jax' not in sys.modules; "
            "assert 'secoustic_jax.api' not in sys.modules; print(secoustic_jax.Codec.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Codec"


@pytest.fixture(scope="module")
def tiny():
    return Codec.init(codec_preset("tiny"), seed=1)


def random_state_dict(cfg, seed: int, project_in_gain: float = 1.0) -> dict:
    """Official-layout random weights built on the host (no init compile): running_var > 0,
    norm scales near 1, other floats small; project_in scaled for diverse tokens."""
    rng = np.random.default_rng(seed)
    sd = {}
    for e in codec_table(cfg):
        if e.dtype == "int64":
            sd[e.torch_key] = np.asarray(7, np.int64)
        elif e.torch_key.endswith("running_var") or (
                "norm" in e.torch_key and e.torch_key.endswith("weight")):
            sd[e.torch_key] = rng.uniform(0.5, 1.5, e.torch_shape).astype(np.float32)
        else:
            sd[e.torch_key] = (0.1 * rng.standard_normal(e.torch_shape)).astype(np.float32)
    sd["fsq.project_in.weight"] *= project_in_gain
    return sd


@pytest.fixture(scope="module")
def tiny21():
    """21.5 Hz tiny codec, host-random weights, project_in scaled so tokens are diverse."""
    cfg = codec_preset("tiny_21_5hz")
    return Codec(cfg, import_codec_state_dict(random_state_dict(cfg, 2, 8.0), cfg))


def test_save_load_round_trip_and_config_check(tiny, tmp_path):
    d = tiny.save(tmp_path / "ckpt")
    tiny.save(d)  # overwriting an existing codec directory is atomic and allowed
    back = Codec.load(d)
    assert back.config == tiny.config
    for p, v in flatten(tiny.variables).items():
        np.testing.assert_array_equal(np.asarray(flatten(back.variables)[p]), np.asarray(v))
    other = codec_preset("tiny", {"transformer.num_layers": 3, "seanet.n_filters": 8})
    with pytest.raises(ConfigError) as e:
        Codec.load(d, config=other)
    assert "transformer.num_layers: 2 != 3" in str(e.value)
    assert "seanet.n_filters: 16 != 8" in str(e.value)
    Codec.load(d, config=codec_preset("tiny"))  # equal config is accepted
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a codec directory"):
        tiny.save(tmp_path / "junk")
    with pytest.raises(CheckpointError, match="codec.json missing"):
        Codec.load(tmp_path / "junk")


def test_wrong_structure_is_refused(tiny):
    variables = jax.tree_util.tree_map(np.asarray, tiny.variables)
    del variables["params"]["decoder"]["layer_8"]["bias"]
    variables["params"]["fsq"]["project_out"]["kernel"] = np.zeros((8, 3), np.float32)
    with pytest.raises(CheckpointError) as e:
        Codec(tiny.config, variables)
    assert "missing:    params/decoder/layer_8/bias" in str(e.value)
    assert "params/fsq/project_out/kernel: [8, 3]" in str(e.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_init_export_import_is_bit_exact(tiny, tmp_path, suffix):
    sd = tiny.torch_state_dict()
    assert list(sd) == [e.torch_key for e in codec_table(tiny.config)]
    back = Codec.from_torch(tiny.export_torch(tmp_path / f"x{suffix}"), config=tiny.config)
    for k, v in back.torch_state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


def test_21_5hz_padded_batch_equals_single_items(tiny21, rng):
    """Lengths not divisible by 4: masking before the strided convs keeps the last token."""
    lengths = [37, 50, 23]
    mel = rng.standard_normal((3, 50, 80)).astype(np.float32)
    enc = tiny21.encode_mel(mel, lengths)
    assert enc.tokens.shape == (3, 13) and list(enc.lengths) == [10, 13, 6]
    assert len(np.unique(enc.tokens)) > 5  # diverse tokens, so equality means something
    for b, n in enumerate(lengths):
        one = tiny21.encode_mel(mel[b, :n])
        k = one.tokens.shape[0]
        np.testing.assert_array_equal(enc.tokens[b, :k], one.tokens)
        # float32 summation order differs between padded shapes
        np.testing.assert_allclose(enc.acoustic[b, :k], one.acoustic, atol=1e-5)
    # Without the mask the zero-padded mel changes the last token's embedding: the test bites.
    run = jax.jit(lambda v, x: tiny21.module.apply(v, x, method="encode"))
    unmasked = run(tiny21.variables, np.pad(mel[:1, :37], ((0, 0), (0, 3), (0, 0))))
    assert np.abs(np.asarray(unmasked.acoustic)[0, 9] - enc.acoustic[0, 9]).max() > 1e-3


@pytest.mark.parametrize("preset", ["tiny", "tiny_21_5hz"])
def test_encode_tokens_equals_encode_mel_tokens(preset, rng):
    """The tokenizer entry point skips the acoustic stack but gives the same tokens,
    batched with lengths and single items alike."""
    cfg = codec_preset(preset)
    codec = Codec(cfg, import_codec_state_dict(random_state_dict(cfg, 3, 8.0), cfg))
    lengths = [37, 50, 23]
    mel = rng.standard_normal((3, 50, 80)).astype(np.float32)
    full = codec.encode_mel(mel, lengths)
    tokens = codec.encode_tokens(mel, lengths)
    assert tokens.dtype == np.int32 and tokens.shape == full.tokens.shape
    assert len(np.unique(tokens)) > 5  # diverse tokens, so equality means something
    for b, n in enumerate(lengths):
        k = int(full.lengths[b])
        np.testing.assert_array_equal(tokens[b, :k], full.tokens[b, :k])
        np.testing.assert_array_equal(codec.encode_tokens(mel[b, :n]), full.tokens[b, :k])
    # It compiles without the acoustic stack: fewer FLOPs than encode.
    cost = lambda m: jax.jit(lambda v, x: codec.module.apply(v, x, method=m)).lower(  # noqa: E731
        codec.variables, mel[:1]).compile().cost_analysis()
    costs = [c[0] if isinstance(c, (list, tuple)) else c for c in (cost("encode_tokens"), cost("encode"))]
    assert costs[0]["flops"] < 0.75 * costs[1]["flops"]


def test_prompt_embedding_short_prompts_batched(tiny, rng):
    mel = rng.standard_normal((3, 420, 80)).astype(np.float32)
    lengths = [420, 120, 299]
    g = tiny.prompt_embedding(mel, lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(g[b], tiny.prompt_embedding(mel[b, :n]), atol=1e-5)
    # the centred crop: 120 frames keeps all of them; the official slice keeps 150 - 60 = 90?
    assert prompt_crop(120) == (0, 120) and prompt_crop(420) == (60, 360)
    official = tiny.prompt_embedding(mel[1, :150], official_crop=True)
    np.testing.assert_allclose(official, tiny.prompt_embedding(mel[1, 75:150]), atol=1e-5)


@pytest.mark.parametrize("t,expected", [(400, (50, 350)), (150, (75, 150)), (200, (150, 200)),
                                        (299, (298, 299)), (80, (0, 80)), (300, (0, 300))])
def test_official_prompt_crop_emulation(t, expected):
    assert prompt_crop(t, official=True) == expected  # model.md §16.1 table


def test_decode_lengths_and_padding_invariance(tiny21, rng):
    tokens = rng.integers(0, 6561, (2, 11)).astype(np.int32)
    g = rng.standard_normal((2, 64)).astype(np.float32)
    mel = tiny21.decode_tokens(tokens, g)
    assert mel.shape == (2, 44, 80)
    np.testing.assert_allclose(tiny21.decode_tokens(tokens[:, :5], g)[:, :20], mel[:, :20],
                               atol=1e-5)  # causal: a prefix decodes to the prefix
    a = rng.standard_normal((1, 7, 64)).astype(np.float32)
    assert tiny21.decode_acoustic(a).shape == (1, 28, 80)


def test_bad_inputs_raise_clear_errors(tiny):
    g = np.zeros((1, 64), np.float32)
    with pytest.raises(ValueError, match="values must lie in 0..6560"):
        tiny.decode_tokens(np.array([[0, 6561]]), g)
    with pytest.raises(ValueError, match="expected integers"):
        tiny.decode_tokens(np.array([[0.5]]), g)
    with pytest.raises(ValueError, match=r"paralinguistic: expected shape \[1, 64\]"):
        tiny.decode_tokens(np.array([[1, 2]]), np.zeros((1, 63), np.float32))
    bad = np.zeros((1, 10, 80), np.float32)
    bad[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        tiny.encode_mel(bad)
    with pytest.raises(ValueError, match="empty input"):
        tiny.encode_mel(np.zeros((1, 0, 80), np.float32))
    with pytest.raises(ValueError, match="80 bins"):
        tiny.encode_mel(np.zeros((1, 10, 81), np.float32))
    with pytest.raises(ValueError, match="lengths must be"):
        tiny.encode_mel(np.zeros((2, 10, 80), np.float32), [10, 11])


def test_training_forward_samples_and_updates_batch_stats(tiny, rng):
    cfg = tiny.config
    mel = rng.standard_normal((2, 16, 80)).astype(np.float32)
    prompt = rng.standard_normal((2, 12, 80)).astype(np.float32)
    lens = np.array([12, 7], np.int32)
    # lengths go in as a jit argument (a closure constant trips paralinguistic's host check)
    fwd = jax.jit(lambda v, n, key: tiny.module.apply(
        v, mel, prompt, n, train=True, rngs={"sample": key}, mutable=["batch_stats"]))
    out, upd = fwd(tiny.variables, lens, jax.random.PRNGKey(3))
    d = cfg.transformer.d_model
    assert out.acoustic.shape == (2, 16, d) and out.mel_from_acoustic.shape == (2, 16, 80)
    assert out.codes_ste.shape == (2, 16, 8) and out.tokens.dtype == jnp.int32
    assert out.g_sample.shape == (2, d) and out.connector_out.shape == (2, 16, d)
    assert not np.allclose(out.semantic_sample, out.semantic_mu)
    nbt = upd["batch_stats"]["paralinguistic_encoder"]["batchnorm_1"]["num_batches_tracked"]
    assert int(nbt) == 1
    ev = jax.jit(lambda v, n: tiny.module.apply(v, mel, prompt, n, train=False))(tiny.variables,
                                                                                 lens)
    np.testing.assert_array_equal(ev.semantic_sample, ev.semantic_mu)
    np.testing.assert_array_equal(ev.g_sample, ev.g_mu)
    enc = tiny.encode_mel(mel)
    np.testing.assert_allclose(ev.semantic_mu, enc.semantic_mu, atol=1e-5)  # same path, other shapes


@pytest.mark.parametrize("steps, pad, shapes", [(16, 1.0625, 110), (4, 1.25, 30)])
def test_bucket_lengths_bound_padding(steps, pad, shapes):
    prev = 0
    for n in range(1, 5000, 7):
        b = bucket_length(n, steps_per_octave=steps)
        assert b >= n and b >= prev and (n <= 64 or b <= pad * n)
        prev = b
    assert len({bucket_length(n, steps_per_octave=steps) for n in range(1, 5000)}) < shapes
    # An evaluation batch (coarse bucket) is a bucket of the facade's rule too.
    assert all(bucket_length(bucket_length(n, steps_per_octave=4)) == bucket_length(n, steps_per_octave=4)
               for n in range(1, 5000))


def test_mel_front_end(tiny, rng):
    wav = (0.1 * rng.standard_normal(22050)).astype(np.float32)
    mel = tiny.mel(wav, 22050)
    assert mel.shape == (86, 80)
    assert tiny.mel(wav[None], 22050).shape == (1, 86, 80)
    assert tiny.mel(wav[:16000], 16000).shape == (86, 80)  # resampled to 22.05 kHz first
    with pytest.raises(ValueError, match="NaN/Inf"):
        tiny.mel(np.full(4000, np.inf, np.float32), 22050)


def test_init_is_seeded():
    a = init_variables(codec_preset("tiny"), 5)
    b = init_variables(codec_preset("tiny"), 5)
    k = ("params", "encoder_transformer", "layers_0", "linear1", "kernel")
    np.testing.assert_array_equal(flatten(a)[k], flatten(b)[k])
    assert golden_tiny("86hz").transformer.num_layers == 1


@pytest.mark.slow
def test_ten_minutes_of_86hz_mel_fit_in_memory():
    """51 680 mel frames through the FULL 86hz preset (minutes on 2 CPU cores)."""
    import json
    import pathlib

    here = pathlib.Path(__file__).parent
    out = subprocess.run([sys.executable, "long_input_memory.py"], cwd=here, check=True,
                         capture_output=True, text=True, timeout=3600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["finite"] and res["decoded_shape"] == [1, 51680, 80]
    # Measured 1.9 GiB peak RSS; one dense attention layer's logits alone would be 79.6 GiB.
    assert res["peak_rss_gib"] < 4.0
    assert res["dense_attention_logits_gib_per_layer"] > 75
