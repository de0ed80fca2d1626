"""Phoneme encoder and length regulator (training.md §5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from secoustic_jax.config.train import PhonemeEncoderConfig
from secoustic_jax.model.phonemes import PhonemeEncoder, length_regulate, regulator_index
from secoustic_jax.training.data import regulator_index_np

TINY = PhonemeEncoderConfig(vocab_size=12, d_model=16, num_heads=2, num_layers=2,
                            dim_feedforward=32, conv_layers=2, dropout=0.0)


def test_regulator_86hz_hand_example():
    d = np.array([[2, 3, 1, 0]])
    idx, valid = regulator_index(d, 1, 8)
    assert np.asarray(idx)[0, :6].tolist() == [0, 0, 1, 1, 1, 2]
    assert np.asarray(valid)[0].tolist() == [True] * 6 + [False] * 2


def test_regulator_21hz_cumulative_rounding_hand_example():
    # E = 3, 5, 6, 13 -> B = floor(E/4 + 1/2) = 1, 1, 2 and B_n = ceil(13/4) = 4.
    d = np.array([[3, 2, 1, 7, 0]])
    idx, valid = regulator_index(d, 4, 5)
    assert np.asarray(idx)[0, :4].tolist() == [0, 2, 3, 3]  # phone 1 gets zero tokens
    assert np.asarray(valid)[0].tolist() == [True] * 4 + [False]


@pytest.mark.parametrize("hop", [1, 4])
def test_regulator_matches_numpy_reference(rng, hop):
    d = rng.integers(0, 9, (6, 10))
    d[:, 7:] = 0  # padded phones
    d[2, 3:] = 0
    n = int(np.ceil(d.sum(1).max() / hop)) + 2
    idx, valid = regulator_index(d, hop, n)
    ridx, rvalid = regulator_index_np(d, hop, n)
    np.testing.assert_array_equal(np.asarray(valid), rvalid)
    np.testing.assert_array_equal(np.where(rvalid, np.asarray(idx), 0), np.where(rvalid, ridx, 0))
    # Token totals are exact: ceil(T / hop) valid frames per utterance.
    np.testing.assert_array_equal(rvalid.sum(1), np.ceil(d.sum(1) / hop).astype(int))


def test_length_regulate_expands_rows(rng):
    emb = rng.normal(size=(1, 3, 4)).astype(np.float32)
    out, valid = length_regulate(emb, np.array([[1, 2, 1]]), 1, 5)
    np.testing.assert_array_equal(np.asarray(out)[0, :4], emb[0, [0, 1, 1, 2]])
    assert float(jnp.abs(out[0, 4]).max()) == 0.0 and not bool(valid[0, 4])


def test_encoder_ignores_padding_and_zeroes_it(rng):
    enc = PhonemeEncoder(TINY)
    phones = np.array([[3, 5, 7, 2, 0, 0, 0, 0]], np.int32)
    v = meta.unbox(enc.init(jax.random.PRNGKey(0), phones, train=False))
    a = enc.apply(v, phones, train=False)
    longer = np.concatenate([phones, np.zeros((1, 4), np.int32)], 1)
    b = enc.apply(v, longer, train=False)
    np.testing.assert_allclose(np.asarray(a)[0, :4], np.asarray(b)[0, :4], atol=1e-5)  # f32 attn sums
    assert float(jnp.abs(b[0, 4:]).max()) == 0.0
    # Changing a padded ID (it stays padding) or the contents after it changes nothing.
    assert a.shape == (1, 8, 16) and np.isfinite(np.asarray(a)).all()


def test_encoder_default_size_is_about_4_2m_parameters():
    cfg = PhonemeEncoderConfig(vocab_size=100)
    shapes = jax.eval_shape(lambda: PhonemeEncoder(cfg).init(
        jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32), train=False))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(meta.unbox(shapes)))
    assert 4.0e6 < n < 4.5e6, n


def test_encoder_requires_a_vocabulary():
    with pytest.raises(ValueError, match="vocab_size is 0"):
        PhonemeEncoder(PhonemeEncoderConfig()).init(jax.random.PRNGKey(0),
                                                    jnp.ones((1, 4), jnp.int32), train=False)
