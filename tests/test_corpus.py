"""Embedded synthetic corpus: tiny build, every synthesiser's timings, sentences, Asterisk."""

import json
import pathlib

import numpy as np
import pytest
import soundfile as sf
from _data_helpers import tiny_corpus

from secoustic_jax.config.data import CorpusConfig
from secoustic_jax.data import manifest
from secoustic_jax.data.corpus import plan, run_task
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.phones import SIL, PhoneInventory
from secoustic_jax.data.sentences import generate_sentences, split_sentences
from secoustic_jax.data.synth import Job

SPLITS = ("train", "valid", "test", "test_unseen")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory)


def test_tiny_corpus_layout(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["skipped"] == 0 and meta["hours"] > 0.02
    assert set(meta["speakers"]) == {f"synthetic:{v}" for v in (
        "flite_kal16", "flite_slt", "espeak_en-us+f3", "flite_rms")}
    assert all(meta["splits"][s] > 0 for s in SPLITS) and meta["seed"] == CorpusConfig.seed
    assert "festival" in meta["synthesizers"]
    inv = PhoneInventory.load(corpus)
    assert len(inv) == meta["phones"]
    texts = {}
    for split in SPLITS:
        recs, rep = manifest.load_manifest(corpus / f"{split}.jsonl", require_alignment=True,
                                           inventory=inv, check_files=True)
        assert rep.skipped == 0 and len(recs) == meta["splits"][split]
        texts[split] = {s for r in recs for s in r["text"].split(". ")}
        for r in recs:
            assert r["split"] == split and r["sample_rate"] == 22050
            info = sf.info(manifest.audio_path(r))
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
            assert info.frames == r["num_samples"]
            assert sum(r["durations"]) == manifest.num_frames(r)
        spk = {r["speaker"] for r in recs}
        assert (spk == {"synthetic:flite_rms"}) == (split == "test_unseen")
        if split in ("valid", "test"):
            assert "synthetic:espeak_en-us+f3" not in spk  # espeak is train-only
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["valid"]


def test_mel_length_matches_manifest(corpus):
    recs, _ = manifest.load_manifest(corpus / "valid.jsonl")
    for r in recs:
        assert utterance_mel(manifest.audio_path(r)).shape == (manifest.num_frames(r), 80)


def test_plan_is_deterministic():
    a, b = plan(CorpusConfig(size="tiny")), plan(CorpusConfig(size="tiny"))
    assert a == b
    c = plan(CorpusConfig(size="tiny", seed=1))
    assert [j.text for j, _ in a["flite_slt"]] != [j.text for j, _ in c["flite_slt"]]
    d = plan(CorpusConfig(size="12", voices=("flite_awb", "piper_joe")))
    assert [s for _, s in d["flite_awb"]] == ["test_unseen"] * 3
    assert [s for _, s in d["piper_joe"]].count("train") == 10
    with pytest.raises(ValueError, match="unknown voice"):
        plan(CorpusConfig(voices=("nope",)))


def test_sentences():
    s = generate_sentences(600, 0)
    assert len(set(s)) == 600 and s == generate_sentences(600, 0)
    assert generate_sentences(10, 0) == s[:10] and generate_sentences(10, 1) != s[:10]
    assert all(x[0].isupper() and x[-1] in ".?!" for x in s)
    parts = split_sentences(s, 50, 50)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [500, 50, 50]


def _energy_check(rec, out):
    """SIL frames must be quieter than phone frames: the timings really match the audio."""
    mel = utterance_mel(out / rec["audio"])
    labels = np.repeat(np.array(rec["phones"]), rec["durations"])
    energy = np.log(np.exp(mel).sum(1))
    sil, speech = energy[labels == SIL], energy[labels != SIL]
    assert len(sil) > 5 and len(speech) > 20
    assert np.median(speech) > np.median(sil) + 2.0, (np.median(speech), np.median(sil))


@pytest.mark.parametrize("voice", ["festival_kal", "festival_slt", "flite_kal16", "flite_awb",
                                   "espeak_en-gb-x-rp+f2", "piper_joe"])
def test_every_engine_sums_exactly(voice, tmp_path):
    job = Job(f"{voice}_t", 'He said "hello" to Anna. Then the old captain walked home.',
              {"stretch": 1.1, "f0": 120.0, "pitch": 40, "noise": 0.6, "noise_w": 0.7})
    if voice in ("flite_kal16",):
        job.prosody["f0"] = 110.0
    recs, skips = run_task(voice, [(job, "train")], str(tmp_path))
    assert skips == [] and len(recs) == 1
    r = recs[0]
    assert manifest.validate_record(r, require_alignment=True,
                                    root=pathlib.Path(tmp_path)) == []
    assert sum(r["durations"]) == manifest.num_frames(r) and r["sample_rate"] == 22050
    assert r["phones"][0] == SIL or r["durations"][0] <= 3
    native = {"festival_slt": 32000, "festival_kal": 16000, "flite_kal16": 16000,
              "flite_awb": 16000}.get(voice, 22050)
    assert r["extra"]["native_sample_rate"] == native
    _energy_check(r, tmp_path)


def test_corpus_cli_small(tmp_path, capsys):
    from secoustic_jax.data.commands import main

    assert main(["corpus", "build", "--out", str(tmp_path / "c"), "--size", "3", "--voices",
                 "flite_rms,flite_slt", "--heldout", "flite_slt", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "hours" in out and "2 speakers" in out
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["splits"]["test_unseen"] == 2
    assert main(["corpus", "validate", str(tmp_path / "c" / "train.jsonl"), "--stage2"]) == 0


ASTERISK = pathlib.Path("/usr/share/asterisk/sounds/en_US_f_Allison")
needs_asterisk = pytest.mark.skipif(not ASTERISK.is_dir(), reason="run `make install` (Asterisk)")


@needs_asterisk
def test_asterisk_import(tmp_path):
    from secoustic_jax.data.asterisk import decode_g722, import_asterisk, spoken_text

    recs, rep = import_asterisk(tmp_path, limit=12)
    assert rep.counts["non_speech"] >= 1 and len(recs) + rep.skipped == 12
    r = recs[0]
    assert r["sample_rate"] == 16000 and r["split"] == "test" and r["speaker"] == "asterisk:allison"
    assert sf.info(tmp_path / r["audio"]).samplerate == 16000 and "[" not in r["text"]
    assert spoken_text("at [@] sign [pause]") == "at sign"
    files = sorted(ASTERISK.glob("*.g722"))[:2]
    alone = decode_g722(files[1])
    decode_g722(files[0])
    np.testing.assert_array_equal(decode_g722(files[1]), alone)  # fresh decoder per file


@pytest.mark.slow
@needs_asterisk
def test_asterisk_pocketsphinx_alignment(tmp_path):
    from secoustic_jax.data.asterisk import import_asterisk

    recs, rep = import_asterisk(tmp_path, limit=4, align_phones=True)
    aligned = [r for r in recs if "phones" in r]
    assert aligned and all(sum(r["durations"]) == manifest.num_frames(r) for r in aligned)
