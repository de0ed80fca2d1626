"""Model FLOPs accounting: closed forms against brute force and parameter counts."""

import numpy as np
import pytest

from secoustic_jax import flops
from secoustic_jax.config import codec_preset


@pytest.mark.parametrize("length,context", [(1, 250), (10, 250), (250, 250), (251, 250),
                                            (1000, 250), (7, 3)])
def test_attention_pairs_brute_force(length, context):
    t = np.arange(length)
    visible = (t[:, None] - t[None, :] >= 0) & (t[:, None] - t[None, :] < context)
    assert flops.attention_pairs(length, context) == int(visible.sum())


def test_transformer_dense_flops_are_two_per_weight_per_frame():
    cfg = codec_preset("86hz").transformer
    d, f = cfg.d_model, cfg.dim_feedforward
    weights_per_layer = 3 * d * d + d * d + 2 * d * f  # 3,145,728 matmul weights
    assert weights_per_layer == 3_148_800 - 2 * 1024 - 2 * 512  # model.md §5 minus norms/scales
    # Context 1 leaves one (q, k) pair per frame: attention adds 4 d per frame.
    one = flops.transformer(cfg.__class__(**{**cfg.__dict__, "context": 1}), 100)
    assert one == cfg.num_layers * 100 * (2 * weights_per_layer + 4 * d)


def test_seanet_flops_match_parameter_counts_at_stride_one():
    # With stride 1 every weight is used once per frame: FLOPs = 2 * weights * T.
    cfg = codec_preset("86hz")
    frames = 100
    enc_weights = 553_184 - (64 + 32 + 64 + 128 + 64 + 128 + 256 + 512)  # minus biases
    assert flops.seanet_encoder(cfg.seanet, frames) == 2.0 * enc_weights * frames
    dec_weights = 1_056_560 - (256 + 128 + 64 + 128 + 64 + 32 + 64 + 80)
    assert flops.seanet_decoder(cfg.seanet, frames) == 2.0 * dec_weights * frames


def test_train_step_stage_costs():
    cfg = codec_preset("21_5hz")
    f = flops.codec_forward(cfg, 256)
    s1 = flops.train_step(cfg, 1, batch=4, frames=256)
    assert s1 == 4 * 3 * f.total("encoder", "encoder_transformer", "decoder_transformer", "decoder")
    s2 = flops.train_step(cfg, 2, batch=4, frames=256, extra_forward=1e6)
    assert s2 > 0 and s2 != s1
    with pytest.raises(ValueError):
        flops.train_step(cfg, 4, batch=1, frames=10)
