"""Corpus-wide speaker probes (eval/disentangle.py): intervals, speaker merging, batching."""

import numpy as np
import pytest

from secoustic_jax.eval import disentangle as D


def test_wilson_interval_matches_the_closed_form():
    lo, hi = D.wilson_interval(8, 10)
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3  # textbook values for 8 / 10
    lo, hi = D.wilson_interval(412, 412)
    assert hi == 1.0 and 0.99 < lo < 1.0
    assert D.wilson_interval(0, 5)[0] == 0.0
    with pytest.raises(ValueError):
        D.wilson_interval(3, 2)


def test_voices_of_one_recorded_speaker_are_one_class():
    assert D.underlying_speaker("synthetic:flite_slt") == D.underlying_speaker("synthetic:festival_slt")
    assert D.underlying_speaker("synthetic:flite_kal16") == D.underlying_speaker("festival_kal")
    assert D.underlying_speaker("synthetic:flite_awb") != D.underlying_speaker("synthetic:flite_rms")
    assert D.underlying_speaker("libritts:1234") == "libritts:1234"  # unknown voices stay


def _utts(rng, speakers=3, per=8, offset=3.0):
    out = []
    for s in range(speakers):
        for k in range(per):
            t = int(rng.integers(40, 90))
            mel = rng.normal(-5.0, 1.0, (t, 80)).astype(np.float32)
            mel[:, s * 20:(s + 1) * 20] += offset  # the speaker: a loud band of 20 bins
            out.append(D.Utterance(f"u{s}_{k}", f"spk{s}", f"spk{s}", f"text {k}", mel, ""))
    return out


def test_probe_reads_the_speaker_from_g_and_batching_is_exact(rng):
    from secoustic_jax.api import Codec
    from secoustic_jax.config.model import codec_preset

    codec = Codec.init(codec_preset("tiny"), seed=0)
    utts = _utts(rng)
    feats = D.codec_features(codec, utts)
    # Length-sorted padded batches give each utterance exactly its own-run features.
    for i in (0, 13, 23):
        m = utts[i].mel[None]
        np.testing.assert_allclose(feats["G"][i], codec.prompt_embedding(m)[0], atol=1e-5)  # float32, other batch shape
        tok = codec.encode_tokens(m)[0]
        np.testing.assert_allclose(feats["tokens"][i],
                                   np.bincount(tok, minlength=6561) / tok.size, atol=1e-12)
    res = D.run(codec, utts, n_splits=4, baselines=False)
    assert res["n_utterances"] == 24 and res["n_speakers"] == 3 and res["n_texts"] == 8
    g = res["features"]["G"]
    assert g["accuracy"] > 0.9 and g["ci95"][0] <= g["accuracy"] <= g["ci95"][1]
    # Labels that carry no information fall to chance: the probe is not reading the order.
    for u, lab in zip(utts, rng.permutation([u.speaker for u in utts])):
        u.speaker = lab
    assert D.run(codec, utts, n_splits=4, baselines=False)["features"]["G"]["accuracy"] < 0.7
