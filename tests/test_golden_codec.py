"""Golden parity of the whole codec, loaded through the real import path (golden README §1).

Each stage is fed both the golden input of that stage (localises an error) and the port's
own chained output. Tolerances are the golden manifest's suggested atol per array: about
10x the float32 noise of the official code (1 vs 2 threads, float64 vs float32).
"""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from secoustic_jax.api import Codec, prompt_crop
from secoustic_jax.config import golden_tiny

VARIANTS = ("86hz", "21_5hz")


@pytest.fixture(scope="module", params=VARIANTS)
def golden(request, golden_dir, tmp_path_factory):
    """(variant, Codec imported from the golden safetensors, io arrays, atol per array)."""
    variant = request.param
    path = golden_dir / "codec_tiny_86hz.safetensors"
    if variant == "21_5hz":  # the 86 Hz file with the 4 resampling tensors replaced
        sd = load_file(str(path))
        sd.update(load_file(str(golden_dir / "codec_tiny_21_5hz_resample.safetensors")))
        path = tmp_path_factory.mktemp("g21") / "codec_tiny_21_5hz.safetensors"
        save_file(sd, str(path))
    codec = Codec.from_torch(path, config=golden_tiny(variant))
    name = f"codec_tiny_{variant}_io.npz"
    io = dict(np.load(golden_dir / name))
    manifest = json.loads((golden_dir / "manifest.json").read_text())
    atol = {k: v["atol"] for k, v in manifest["codec_tiny"]["io"][name]["arrays"].items()}
    return variant, codec, io, atol


def _stage(codec, fn, *args):
    """Runs `fn(module, *args)` inside apply (jitted), numpy out."""
    run = jax.jit(lambda v, *a: codec.module.apply(v, *a, method=fn))
    return jax.tree_util.tree_map(np.asarray, run(codec.variables, *args))


def _check(got, io, atol, name, errors):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - io[name])))
    errors.setdefault(name, []).append(err)
    assert got.shape == io[name].shape, (name, got.shape)
    assert err <= atol[name], f"{name}: max abs error {err:.3g} > atol {atol[name]}"


@pytest.fixture(scope="module")
def encoded(golden):
    _, codec, io, _ = golden
    return _stage(codec, lambda m, x: m.encode(x), io["mel_in"])


def test_encoder_stages(golden, encoded):
    variant, codec, io, atol = golden
    errors = {}
    _check(encoded.z, io, atol, "z", errors)
    # acoustic and semantic mu: from the golden z, and chained from the port's z
    acoustic = _stage(codec, lambda m, z: m.encoder_transformer(z), io["z"])
    mu = _stage(codec, lambda m, z: m.vae_semantic_transformer.mu(z), io["z"])
    for got, name in ((acoustic, "acoustic_embed"), (encoded.acoustic, "acoustic_embed"),
                      (mu, "semantic_mu"), (encoded.semantic_mu, "semantic_mu")):
        _check(got, io, atol, name, errors)
    projected = _stage(codec, lambda m, x: m.fsq.project(x), io["semantic_mu"])
    _check(projected, io, atol, "fsq_projected", errors)
    _check(encoded.projected, io, atol, "fsq_projected", errors)
    codes, tokens = _stage(codec, lambda m, u: m.fsq.quantize(u), io["fsq_projected"])
    for c, t in ((codes, tokens), (encoded.codes, encoded.tokens)):
        np.testing.assert_array_equal(c, io["fsq_codes"])  # exact: margin 48x the noise
        np.testing.assert_array_equal(t, io["tokens"])
        assert t.dtype == np.int32
    print(variant, {k: max(v) for k, v in errors.items()})


def test_paralinguistic_and_crop(golden):
    variant, codec, io, atol = golden
    t = io["mel_in"].shape[1]
    start, end = prompt_crop(t)
    np.testing.assert_array_equal([start, end], io["extract_prompt_crop"])
    assert prompt_crop(t, official=True) == (start, end)  # T >= 300: both rules agree
    errors = {}
    direct = _stage(codec, lambda m, x: m.prompt_embedding(x), io["mel_in"][:, start:end])
    _check(direct, io, atol, "paralinguistic", errors)
    _check(codec.prompt_embedding(io["mel_in"]), io, atol, "paralinguistic", errors)
    print(variant, errors)


def test_decoder_stages(golden, encoded):
    variant, codec, io, atol = golden
    errors = {}
    for tokens in (io["tokens"], encoded.tokens):
        _check(_stage(codec, lambda m, t: m.fsq.decode(t), tokens), io, atol, "fsq_decoded",
               errors)
    g_own = codec.prompt_embedding(io["mel_in"])
    s_own = _stage(codec, lambda m, t: m.fsq.decode(t), encoded.tokens)
    for s, g in ((io["fsq_decoded"], io["paralinguistic"]), (s_own, g_own)):
        _check(_stage(codec, lambda m, a, b: m.semantic_connector(a, b), s, g), io, atol,
               "connector_out", errors)
    from_connector = _stage(codec, lambda m, x: m.decode_acoustic(x), io["connector_out"])
    _check(from_connector, io, atol, "mel_from_tokens", errors)
    _check(codec.decode_tokens(io["tokens"], io["paralinguistic"]), io, atol,
           "mel_from_tokens", errors)
    _check(codec.decode_tokens(encoded.tokens, g_own), io, atol, "mel_from_tokens", errors)
    _check(codec.decode_acoustic(io["acoustic_embed"]), io, atol, "mel_from_acoustic", errors)
    _check(codec.decode_acoustic(encoded.acoustic), io, atol, "mel_from_acoustic", errors)
    print(variant, {k: max(v) for k, v in errors.items()})


def test_api_encode_matches_golden(golden):
    """The facade (bucket padding + lengths) gives the golden tokens and embeddings."""
    variant, codec, io, atol = golden
    enc = codec.encode_mel(io["mel_in"])
    np.testing.assert_array_equal(enc.tokens, io["tokens"])
    errors = {}
    _check(enc.acoustic, io, atol, "acoustic_embed", errors)
    _check(enc.semantic_mu, io, atol, "semantic_mu", errors)
    assert (enc.lengths == io["tokens"].shape[1]).all()


def test_batch_rows_equal_single_runs(golden):
    variant, codec, io, atol = golden
    if io["mel_in"].shape[0] < 2:
        pytest.skip("the 21.5 Hz golden has batch 1")
    for b in range(2):
        one = codec.encode_mel(io["mel_in"][b])
        np.testing.assert_array_equal(one.tokens, io["tokens"][b])
        err = np.abs(one.acoustic - io["acoustic_embed"][b]).max()
        assert err <= atol["acoustic_embed"]
