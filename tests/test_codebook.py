"""Codebook statistics and bitrates (evaluation.md §4.7–4.8) on constructed token arrays."""

import math

import numpy as np
import pytest

from secoustic_jax.eval import codebook


def test_uniform_tokens_perplexity_equals_code_count():
    # Every code exactly 3 times, split into uneven "utterances".
    pool = np.repeat(np.arange(codebook.NUM_CODES), 3)
    np.random.default_rng(0).shuffle(pool)
    utts = np.split(pool, [100, 5000, 12000])
    s = codebook.codebook_stats(utts, hop_factor=1)
    assert s["num_tokens"] == 3 * 6561 and s["used_codes"] == 6561
    assert s["utilisation"] == 1.0
    assert s["perplexity"] == pytest.approx(6561, rel=1e-12)  # float64 log/exp round trip
    assert s["normalised_entropy"] == pytest.approx(1.0, rel=1e-12)
    assert s["max_token_freq"] == pytest.approx(1 / 6561)
    assert s["zero_code_freq"] == pytest.approx(1 / 6561)
    # Entropy bound equals the nominal rate when all codes are equally likely.
    assert s["entropy_bitrate_bps"] == pytest.approx(s["nominal_bitrate_bps"], rel=1e-12)


def test_partial_use_and_collapse():
    # 100 codes used, one of them (the zero code) takes half of the mass.
    tokens = np.concatenate([np.full(990, codebook.ZERO_CODE), np.repeat(np.arange(99), 10)])
    s = codebook.codebook_stats(tokens.reshape(2, -1))  # [B, T'] works too
    assert s["used_codes"] == 100 and s["utilisation"] == 100 / 6561  # exact count ratio
    assert s["zero_code_freq"] == 0.5 and s["max_token_freq"] == 0.5
    expected_h = -(0.5 * math.log(0.5) + 99 * (1 / 198) * math.log(1 / 198))
    assert s["entropy_nats"] == pytest.approx(expected_h, rel=1e-12)  # summation order only
    assert s["top_tokens"][0] == [codebook.ZERO_CODE, 0.5]
    # Ties are listed in ascending token order (stable sort): reproducible.
    assert [t for t, _ in s["top_tokens"][1:]] == list(range(9))
    assert "nominal_bitrate_bps" not in s


def test_single_code_perplexity_one():
    s = codebook.codebook_stats([np.full(50, 7, np.int32)])
    assert s["perplexity"] == 1.0 and s["entropy_nats"] == 0.0 and s["top_tokens"] == [[7, 1.0]]


def test_bitrates_match_spec():
    assert codebook.nominal_bitrate(1) == pytest.approx(1092.1, abs=0.05)  # spec rounds to 0.1
    assert codebook.nominal_bitrate(4) == pytest.approx(273.0, abs=0.05)
    assert codebook.side_info(2.0) == {"side_info_bits": 16384.0, "side_info_bps": 8192.0}
    with pytest.raises(ValueError, match="hop factor"):
        codebook.token_rate(2)
    with pytest.raises(ValueError, match="positive"):
        codebook.side_info(0.0)


def test_subsample_keeps_total_and_is_seeded():
    tokens = np.random.default_rng(1).integers(0, 6561, size=20000)
    a = codebook.subsample_tokens(tokens, 5000, seed=3)
    b = codebook.subsample_tokens(tokens, 5000, seed=3)
    full = codebook.token_counts(tokens)
    assert a.sum() == 5000 and np.array_equal(a, b) and (a <= full).all()
    assert codebook.stats_from_counts(a)["utilisation"] < codebook.stats_from_counts(full)["utilisation"]
    with pytest.raises(ValueError, match="num_tokens"):
        codebook.subsample_tokens(tokens, 20001)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0, 6561]), "outside"),
        (np.array([-1, 3]), "outside"),
        (np.array([0.0, 1.0]), "integer"),
    ],
)
def test_bad_tokens_named(bad, match):
    with pytest.raises(ValueError, match=match):
        codebook.token_counts(bad)


def test_empty_pool_rejected():
    with pytest.raises(ValueError, match="no tokens"):
        codebook.codebook_stats([np.zeros(0, np.int32)])
