"""The codec name table equals the official key lists, in order, with shapes and dtypes."""

import numpy as np
import pytest

from secoustic_jax.checkpoint.codec_names import (TOP_LEVEL_ORDER, codec_table, parameter_count,
                                                  resample_keys)
from secoustic_jax.checkpoint.table import TRANSFORMS, read_key_tsv
from secoustic_jax.config import codec_preset, golden_tiny

FULL = {"86hz": "official_state_dict_86hz.tsv", "21_5hz": "official_state_dict_21_5hz.tsv"}
GOLDEN = {"86hz": "codec_tiny_86hz_keys.tsv", "21_5hz": "codec_tiny_21_5hz_keys.tsv"}


def _rows(table):
    return [(e.torch_key, e.torch_shape, e.dtype) for e in table]


@pytest.mark.parametrize("variant", sorted(FULL))
def test_full_table_equals_official_tsv(variant, reference_dir):
    expected = read_key_tsv(reference_dir / FULL[variant])
    table = codec_table(codec_preset(variant))
    assert len(table) == 412
    assert _rows(table) == expected  # keys, order, shapes and dtypes


@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_golden_tiny_table_equals_golden_key_list(variant, golden_dir):
    expected = read_key_tsv(golden_dir / GOLDEN[variant])
    table = codec_table(golden_tiny(variant))
    assert len(table) == 132
    assert _rows(table) == expected


def test_parameter_counts_match_model_md():
    # model.md §12: parameters only, the 18 BatchNorm buffers excluded.
    assert parameter_count(codec_preset("86hz")) == 103_321_304
    assert parameter_count(codec_preset("21_5hz")) == 103_485_144
    # golden README: 7,815,768 parameters + buffer values, of which 6 x 4 x C buffers (896).
    assert parameter_count(golden_tiny("86hz")) == 7_815_768 - 896


def test_resample_keys_are_exactly_the_keys_that_differ_between_variants(reference_dir):
    a = read_key_tsv(reference_dir / FULL["86hz"])
    b = read_key_tsv(reference_dir / FULL["21_5hz"])
    differing = [ka for (ka, sa, _), (kb, sb, _) in zip(a, b) if sa != sb]
    for variant, ratio in (("86hz", 1), ("21_5hz", 2)):
        keys = resample_keys(codec_preset(variant).seanet)
        assert [k for k, _ in keys] == differing
        assert all(r == ratio for _, r in keys)


@pytest.mark.parametrize("preset", ["86hz", "tiny", "tiny_21_5hz"])
def test_table_is_a_bijection_onto_flax_paths(preset):
    table = codec_table(codec_preset(preset))
    assert len({e.torch_key for e in table}) == len(table)
    assert len({e.path for e in table}) == len(table)
    assert {e.path[0] for e in table} == {"params", "batch_stats"}
    prefixes = [e.torch_key.split(".")[0] for e in table]
    assert list(dict.fromkeys(prefixes)) == list(TOP_LEVEL_ORDER)


def test_flax_layouts_follow_the_contract():
    table = {e.torch_key: e for e in codec_table(golden_tiny("86hz"))}

    def flax_shape(key):
        e = table[key]
        return TRANSFORMS[e.transform].to_flax(np.zeros(e.torch_shape, np.float32)).shape

    assert flax_shape("encoder.model.0.conv.conv.weight") == (7, 80, 64)  # [k, in, out]
    assert flax_shape("decoder.model.2.convtr.convtr.weight") == (2, 256, 128)  # [k, in, out]
    assert flax_shape("paralinguistic_encoder.conv2d_1.weight") == (3, 3, 80, 32)
    assert flax_shape("encoder_transformer.transformer.layers.0.self_attn.in_proj_weight") == (
        512, 1536)
    assert flax_shape("paralinguistic_encoder.senet.fc.0.weight") == (128, 8)
    assert table["paralinguistic_encoder.gru.weight_ih_l0"].path[-2:] == ("gru", "weight_ih")
    nbt = table["paralinguistic_encoder.batchnorm_3.num_batches_tracked"]
    assert nbt.path == ("batch_stats", "paralinguistic_encoder", "batchnorm_3",
                        "num_batches_tracked")
    assert (nbt.dtype, nbt.transform, nbt.torch_shape) == ("int64", "count", ())


def test_deeper_and_wider_configs_scale_the_table():
    cfg = codec_preset("86hz", {"transformer.num_layers": 3, "seanet.n_residual_layers": 2})
    table = codec_table(cfg)
    # 4 stacks x 3 layers x 10 keys; SEANet: 2 ResBlocks per ratio adds 4 keys per ratio.
    assert len(table) == 52 + 4 + (16 + 8) + (16 + 8) + 4 * 30 + 4
    keys = [k for k, _ in resample_keys(cfg.seanet)]
    assert keys == ["encoder.model.4.conv.conv.weight", "encoder.model.8.conv.conv.weight",
                    "decoder.model.2.convtr.convtr.weight", "decoder.model.6.convtr.convtr.weight"]
    assert set(keys) <= {e.torch_key for e in table}
