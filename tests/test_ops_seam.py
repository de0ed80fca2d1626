"""The backend seam (secoustic_jax/ops): what an accelerator would run, checked on this CPU.

`ops.backend.using("reference")` stages what every non-CPU host stages (the plain-XLA
reference with native autodiff); under "auto" on this CPU the CPU variants run. Each check
has its positive control under "auto", so it can fail.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax import kernels, ops
from secoustic_jax.config.model import codec_preset
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.training import runtime as rtm, sharding as shd
from secoustic_jax.training.data import SyntheticSource
from secoustic_jax.training.loop import resolve_config
from secoustic_jax.training.model import TrainNet
from train_standin import tiny_experiment

# Custom calls that are not computation: sharding annotations of the jitted step.
ANNOTATIONS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}


def custom_calls(text: str) -> set[str]:
    """Targets of the StableHLO custom calls in a lowered module, annotations excluded."""
    return set(re.findall(r"custom_call @(\w+)", text)) - ANNOTATIONS


def convolutions(text: str) -> int:
    return text.count("stablehlo.convolution")


def _stage1_step_text() -> tuple[str, str]:
    """(lowered stage-1 train step, lowered stage-1 forward) of the real tiny codec."""
    cfg, _ = resolve_config(tiny_experiment({}, standin=False))
    net = TrainNet(cfg)
    mesh = shd.make_mesh(cfg.mesh)
    shapes = rtm.model_shapes(net, mesh, cfg)
    rt = rtm.build_stage(net, mesh, cfg, shapes, 0)
    stage = cfg.stages[0]
    batch = shd.global_batch(mesh, next(SyntheticSource(cfg, stage.batch_size,
                                                        stage.segment_frames)))
    step = rt.train_step.lower(rt.abstract_state, batch).as_text()
    codec = SecoustiCodec(cfg.codec)
    mel = jax.ShapeDtypeStruct((stage.batch_size, stage.segment_frames, 80), jnp.float32)
    variables = {"params": shapes.params["codec"], "batch_stats": shapes.batch_stats["codec"]}
    fwd = jax.jit(lambda v, m: codec.apply(v, m, method=_acoustic_roundtrip)).lower(
        variables, mel).as_text()
    return step, fwd


def _acoustic_roundtrip(module, mel):
    """Stage 1's forward: D(T_dec(T_ac(E(mel))))."""
    return module.decode_acoustic(module.encoder_transformer(module._encoder(mel)))


def test_reference_train_step_has_no_custom_calls_and_xla_conv_gradients():
    with ops.backend.using("reference"):
        step, fwd = _stage1_step_text()
    assert custom_calls(step) == set()
    n_fwd = convolutions(fwd)
    assert n_fwd >= 10  # every SEANet conv of the encoder and decoder
    # Forward, kernel gradient of each, input gradient of all but the first conv (the mel
    # is data): the backward is XLA convolutions, not per-tap matmuls.
    assert convolutions(step) >= 3 * n_fwd - 1
    with ops.backend.using("auto"):  # control: the CPU variant's backward is matmuls
        cpu_step, _ = _stage1_step_text()
    assert convolutions(cpu_step) < 3 * n_fwd - 1


def test_reference_encode_has_no_custom_calls():
    cfg = codec_preset("tiny")
    codec = SecoustiCodec(cfg)
    variables = jax.eval_shape(lambda: codec.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 80)),
                                                  jnp.zeros((1, 8, 80)), train=False))
    mel = jax.ShapeDtypeStruct((1, 600, 80), jnp.float32)  # long: banded attention
    encode = lambda v, m: codec.apply(v, m, method=SecoustiCodec.encode_tokens)  # noqa: E731
    with ops.backend.using("reference"):
        text = jax.jit(encode).lower(variables, mel).as_text()
    assert custom_calls(text) == set()
    with ops.backend.using("auto"):  # control: on CPU the fused attention kernel runs
        assert "secoustic_window_attention" in _auto_encode_calls(encode, variables, mel, True)


def _auto_encode_calls(encode, variables, mel, vectorised: bool) -> set[str]:
    """Custom calls of `encode` lowered under "auto", as if the kernel library's build had
    (or had not) the AVX-512 path of window attention."""
    real = ops.cpu.has_window_kernel
    ops.cpu.has_window_kernel = lambda: vectorised
    try:
        with ops.backend.using("auto"):
            return custom_calls(jax.jit(encode).lower(variables, mel).as_text())
    finally:
        ops.cpu.has_window_kernel = real


def test_window_kernel_only_with_its_vector_build():
    """Its scalar fallback is 4x slower than XLA's attention on an AVX2 CPU: such a build
    stages the reference; the build this host made decides by its own flag."""
    codec = SecoustiCodec(codec_preset("tiny"))
    variables = jax.eval_shape(lambda: codec.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 80)),
                                                  jnp.zeros((1, 8, 80)), train=False))
    mel = jax.ShapeDtypeStruct((1, 600, 80), jnp.float32)
    encode = lambda v, m: codec.apply(v, m, method=SecoustiCodec.encode_tokens)  # noqa: E731
    assert "secoustic_window_attention" not in _auto_encode_calls(encode, variables, mel, False)
    assert "secoustic_window_attention" in _auto_encode_calls(encode, variables, mel, True)
    with ops.backend.using("auto"):
        staged = "secoustic_window_attention" in custom_calls(
            jax.jit(encode).lower(variables, mel).as_text())
    assert staged == kernels.has_vector_window_attention()


@pytest.mark.parametrize("name", ["auto", "reference"])
def test_variants_give_the_same_offline_codec(name):
    cfg = codec_preset("tiny")
    codec = SecoustiCodec(cfg)
    mel = jnp.asarray(np.random.default_rng(0).standard_normal((1, 300, 80)) - 5, jnp.float32)
    variables = codec.init(jax.random.PRNGKey(0), mel[:, :8], mel[:, :8], train=False)
    run = lambda: np.asarray(codec.apply(variables, mel, method=SecoustiCodec.encode).acoustic)  # noqa: E731
    with ops.backend.using("reference"):
        want = run()
    with ops.backend.using(name):
        got = run()
    # float32 sums in another order (fused kernel vs XLA bands); |A| ~ 1.
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_bad_variant_is_refused_and_the_setting_is_restored():
    with pytest.raises(ValueError, match="ops variant must be one of"):
        ops.backend.set_variant("pallas")
    with ops.backend.using("reference"):
        assert ops.backend.variant() == "reference" and not ops.backend.cpu_variants()
    assert ops.backend.variant() == "auto" and ops.backend.cpu_variants()
