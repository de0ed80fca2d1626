"""Disentanglement probe (evaluation.md §6) on synthetic features with known structure."""

import numpy as np
import pytest

from secoustic_jax.eval import probe

N_VOICES, N_SENTENCES, DIM = 6, 20, 32


@pytest.fixture(scope="module")
def design():
    """Every voice reads every sentence (as in E2): labels [N] and two feature sets [N, D]:
    `spk` encodes only the voice, `txt` only the sentence, each plus unit noise."""
    rng = np.random.default_rng(0)
    voices = np.repeat(np.arange(N_VOICES), N_SENTENCES)
    sentences = np.tile(np.arange(N_SENTENCES), N_VOICES)
    voice_means = 3.0 * rng.standard_normal((N_VOICES, DIM))
    sent_means = 3.0 * rng.standard_normal((N_SENTENCES, DIM))
    noise = lambda: rng.standard_normal((voices.size, DIM))  # noqa: E731
    return {
        "voices": voices.astype(str),
        "sentences": sentences,
        "spk": voice_means[voices] + noise(),
        "txt": sent_means[sentences] + noise(),
    }


def test_speaker_probe_separates_encoded_from_absent(design):
    d = design
    hit = probe.speaker_probe(d["spk"], d["voices"], d["sentences"])
    miss = probe.speaker_probe(d["txt"], d["voices"], d["sentences"])
    assert hit.chance == pytest.approx(1 / N_VOICES) and hit.n_classes == N_VOICES
    assert hit.accuracy >= 0.98
    # 120 samples: binomial std of accuracy at p = 1/6 is ~0.034, so +0.15 is > 4 sigma.
    assert miss.accuracy < miss.chance + 0.15
    assert len(hit.fold_accuracies) == 5 and hit.n_samples == N_VOICES * N_SENTENCES


def test_content_probe_separates_encoded_from_absent(design):
    d = design
    hit = probe.content_probe(d["txt"], d["voices"], d["sentences"])
    miss = probe.content_probe(d["spk"], d["voices"], d["sentences"])
    assert hit.chance == pytest.approx(1 / N_SENTENCES)
    assert hit.accuracy >= 0.98
    # p = 1/20: binomial std ~0.02 over 120 samples; +0.1 is 5 sigma.
    assert miss.accuracy < miss.chance + 0.1


def test_run_probes_is_reproducible(design):
    d = design
    feats = {"G": d["spk"], "tokens": d["txt"]}
    a = probe.run_probes(feats, d["voices"], d["sentences"])
    b = probe.run_probes(feats, d["voices"], d["sentences"])
    assert a == b
    assert set(a) == {"G", "tokens"} and set(a["G"]) == {"speaker", "content"}
    assert a["G"]["speaker"]["accuracy"] > a["tokens"]["speaker"]["accuracy"]


def test_bag_of_tokens_and_merge():
    h = probe.bag_of_tokens(np.array([0, 0, 5, 6560]))
    assert h.shape == (6561,) and h.sum() == 1.0 and h[0] == 0.5
    merged = probe.merge_voices(["festival_slt", "flite_slt", "rms"], {"flite_slt": "festival_slt"})
    assert merged.tolist() == ["festival_slt", "festival_slt", "rms"]
    with pytest.raises(ValueError, match="outside"):
        probe.bag_of_tokens(np.array([6561]))


@pytest.mark.parametrize(
    "x, y, g, match",
    [
        (np.zeros(10), np.arange(10), np.arange(10), r"\[N, D\]"),
        (np.zeros((10, 2)), np.arange(9), np.arange(10), "must both be"),
        (np.zeros((10, 2)), np.zeros(10), np.arange(10), "2 classes"),
        (np.zeros((10, 2)), np.arange(10) % 2, np.arange(10) % 3, "needs ≥ 5 groups"),
        (np.full((10, 2), np.nan), np.arange(10) % 2, np.arange(10), "NaN"),
    ],
)
def test_bad_probe_input(x, y, g, match):
    with pytest.raises(ValueError, match=match):
        probe.probe_accuracy(x, y, g)
