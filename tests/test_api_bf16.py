"""Codec(matmul_dtype="bfloat16"): bf16 transformer matmuls with float32 accumulation offline."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.api import Codec, _entry_point
from secoustic_jax.config.model import codec_preset
from secoustic_jax.streaming import lowp


@pytest.fixture(scope="module")
def pair():
    c32 = Codec.init(codec_preset("tiny"), seed=3)
    return c32, Codec(c32.config, c32.variables, matmul_dtype="bfloat16")


def test_bf16_stays_close_and_equals_its_xla_emulation(pair):
    c32, cb = pair
    mel = np.random.default_rng(0).standard_normal((2, 70, 80)).astype(np.float32)
    e32, eb = c32.encode_mel(mel), cb.encode_mel(mel)
    # bf16 operands (2^-9 relative each) in every transformer matmul: the acoustic
    # embedding moves by ~1e-3 of its scale; few tokens (if any) cross an FSQ boundary.
    scale = np.abs(e32.acoustic).max()
    err = np.abs(eb.acoustic - e32.acoustic).max()
    assert 0 < err < 2e-2 * scale, (err, scale)  # > 0: the bf16 path really ran
    assert np.mean(eb.tokens == e32.tokens) > 0.9
    # The same network with bf16-rounded weights and activations emulated in float32.
    v = lowp.bf16_weights(c32.variables)
    manual = _entry_point(c32.config, "encode", "bfloat16")(v, jnp.asarray(mel),
                                                            jnp.asarray([70, 70], jnp.int32))
    # Not bitwise: the facade runs its padded bucket length, and XLA:CPU may order the
    # float32 sums differently per length and CPU (1.6e-7 seen on Zen 4); the bf16
    # rounding itself moves the output ~1e-3 of its scale, 100x this bound.
    np.testing.assert_allclose(np.asarray(manual.acoustic)[:, :eb.acoustic.shape[1]],
                               eb.acoustic, rtol=0, atol=1e-5 * scale)
    g = cb.prompt_embedding(mel)
    m32, mb = c32.decode_tokens(e32.tokens, g), cb.decode_tokens(e32.tokens, g)
    assert 0 < np.abs(mb - m32).max() < 2e-2 * np.abs(m32).max()


def test_bf16_dots_run_in_bf16_and_save_writes_float32(pair, tmp_path):
    c32, cb = pair
    mel = jnp.zeros((1, 64, 80), jnp.float32)
    lens = jnp.asarray([64], jnp.int32)
    hlo = _entry_point(cb.config, "encode", "bfloat16").lower(
        cb._run_variables, mel, lens).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    narrow = [d for d in dots if re.search(r"bf16>, tensor<[0-9x]*bf16>\) -> tensor<[0-9x]*f32>", d)]
    # encode runs two stacks of 4 Dense layers each in bf16; dense_mu and FSQ stay float32.
    assert len(narrow) == 2 * 4 * cb.config.transformer.num_layers
    assert all("bf16" not in d for d in dots if d not in narrow) and len(dots) > len(narrow)
    kernel = cb._run_variables["params"]["decoder_transformer"]["layers_0"]["linear1"]["kernel"]
    assert kernel.dtype == jnp.bfloat16
    cb.save(tmp_path / "c")
    back = Codec.load(tmp_path / "c")
    for a, b in zip(jax.tree.leaves(back.variables), jax.tree.leaves(c32.variables)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_matmul_dtype_is_validated():
    with pytest.raises(ValueError, match="matmul_dtype must be one of"):
        Codec.init(codec_preset("tiny"), matmul_dtype="float16")
