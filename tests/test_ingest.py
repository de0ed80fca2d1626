"""Ingest of LibriTTS(-R), AISHELL-3 and generic audio+TextGrid trees built on the fly."""

import json

import numpy as np
import pytest
from _data_helpers import write_tone

from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.commands import main as cli
from secoustic_jax.data.ingest import (IngestOptions, aishell3_items, ingest_items,
                                       libritts_items, read_aishell_content, write_ingest)
from secoustic_jax.data.phones import SIL, SPN, PhoneInventory
from secoustic_jax.data.textgrid import guess_phone_set, read_intervals, to_durations


def write_grid(path, phones, words=(), fmt="long_textgrid", tail=0.0):
    """phones: [(start, end, label)] -> TextGrid via praatio (both text forms)."""
    from praatio import textgrid
    from praatio.utilities.constants import Interval

    end = max(e for _, e, _ in phones) + tail
    tg = textgrid.Textgrid()
    if words:
        tg.addTier(textgrid.IntervalTier("words", [Interval(*w) for w in words], 0, end))
    tg.addTier(textgrid.IntervalTier("phones", [Interval(s, e, l) for s, e, l in phones if l],
                                     0, end))
    path.parent.mkdir(parents=True, exist_ok=True)
    tg.save(str(path), format=fmt, includeBlankSpaces=True)


EN_PHONES = [(0.0, 0.12, ""), (0.12, 0.2, "HH"), (0.2, 0.31, "AH0"), (0.31, 0.4, "L"),
             (0.4, 0.62, "OW1"), (0.62, 0.7, "sp"), (0.7, 0.81, "spn"), (0.81, 1.02, "")]


def _check_all_sum(records):
    for r in records:
        assert sum(r["durations"]) == manifest.num_frames(r), r["id"]
        assert len(r["phones"]) == len(r["durations"])
        assert manifest.validate_record(r, require_alignment=True) == []


@pytest.fixture
def libritts(tmp_path):
    root, grids = tmp_path / "LibriTTS", tmp_path / "mfa"
    utts = {"train-clean-100": ["19_198_000000_000000", "19_198_000001_000000",
                                "103_1240_000000_000001"],
            "dev-clean": ["84_121123_000007_000001"], "test-clean": ["61_70968_000000_000000"]}
    for subset, ids in utts.items():
        for i, u in enumerate(ids):
            spk, chap = u.split("_")[:2]
            wav = root / subset / spk / chap / f"{u}.wav"
            write_tone(wav, 24000, 1.03 + 0.1 * i)
            if u != "19_198_000001_000000":  # this one: text only in the chapter tsv
                wav.with_name(f"{u}.normalized.txt").write_text(f"hello {u}\n")
            write_grid(grids / spk / f"{u}.TextGrid", EN_PHONES, [(0.12, 0.62, "hello")],
                       fmt="short_textgrid" if i % 2 else "long_textgrid")
    chap = root / "train-clean-100" / "19" / "198"
    (chap / "19_198.trans.tsv").write_text("19_198_000001_000000\tHello!\thello from tsv\n")
    # failures: no TextGrid, no text, corrupt audio, bad phone label, bad file name
    write_tone(chap / "19_198_000002_000000.wav", 24000, 1.0)
    (chap / "19_198_000002_000000.normalized.txt").write_text("no grid")
    write_tone(chap / "19_198_000003_000000.wav", 24000, 1.0)
    write_grid(grids / "19" / "19_198_000003_000000.TextGrid", EN_PHONES)
    (chap / "19_198_000004_000000.wav").write_bytes(b"RIFFjunk")
    (chap / "19_198_000004_000000.normalized.txt").write_text("corrupt")
    write_grid(grids / "19" / "19_198_000004_000000.TextGrid", EN_PHONES)
    write_tone(chap / "19_198_000005_000000.wav", 24000, 1.0)
    (chap / "19_198_000005_000000.normalized.txt").write_text("bad phone")
    write_grid(grids / "19" / "19_198_000005_000000.TextGrid", [(0, 0.5, "QX1"), (0.5, 1, "")])
    write_tone(chap / "notes.wav", 24000, 1.0)
    return root, grids


def test_libritts(libritts, tmp_path):
    root, grids = libritts
    pre = R.SkipReport("layout")
    items = list(libritts_items(root, pre))
    recs, rep = ingest_items(items, IngestOptions("libritts", "en", alignments=grids), tmp_path)
    assert sorted(r["id"].split(":")[1] for r in recs) == sorted(
        ["19_198_000000_000000", "19_198_000001_000000", "103_1240_000000_000001",
         "84_121123_000007_000001", "61_70968_000000_000000"])
    _check_all_sum(recs)
    by = {r["id"]: r for r in recs}
    r = by["libritts:19_198_000001_000000"]
    assert r["text"] == "hello from tsv" and r["speaker"] == "libritts:19"
    assert r["phone_set"] == "arpabet" and r["sample_rate"] == 24000
    assert r["phones"] == [SIL, "arpabet:HH", "arpabet:AH", "arpabet:L", "arpabet:OW", SIL, SPN,
                           SIL]
    assert {x["split"] for x in recs} == {"train", "valid", "test"}
    assert by["libritts:84_121123_000007_000001"]["split"] == "valid"
    kinds = {s.item.split(":")[-1]: s.kind for s in rep.items}
    assert kinds == {"19_198_000002_000000": R.MISSING_ALIGNMENT,
                     "19_198_000003_000000": R.MISSING_TEXT,
                     "19_198_000004_000000": R.UNREADABLE_AUDIO,
                     "19_198_000005_000000": R.UNKNOWN_PHONES}
    assert [s.kind for s in pre.items] == [R.BAD_RECORD] and "notes.wav" in pre.items[0].item
    # manifest paths are relative to the manifest folder and resolve to the audio
    out = write_ingest(tmp_path, "libritts", recs, rep)
    back, vrep = manifest.load_manifest(out, require_alignment=True, check_files=True,
                                        inventory=PhoneInventory.load(tmp_path))
    assert len(back) == 5 and vrep.skipped == 0


def test_libritts_cli(libritts, tmp_path, capsys):
    root, grids = libritts
    out = tmp_path / "out"
    assert cli(["ingest", "libritts", str(root), "--alignments", str(grids), "--out", str(out),
                "--restored"]) == 0
    text = capsys.readouterr().out
    assert "skipped 5" in text and "missing_alignment: 1" in text and "5 utterances" in text
    recs = [json.loads(line) for line in (out / "libritts_r.jsonl").read_text().splitlines()]
    assert {r["corpus"] for r in recs} == {"libritts_r"}
    rep = json.loads((out / "libritts_r.report.json").read_text())
    assert rep["by_kind"][R.UNKNOWN_PHONES] == 1
    assert cli(["corpus", "validate", str(out / "libritts_r.jsonl"), "--stage2"]) == 0


def test_aishell3(tmp_path):
    root, grids = tmp_path / "AISHELL-3", tmp_path / "mfa"
    lines = {"train": ["SSB00050001.wav\t广 guang3 州 zhou1", "SSB00050002.wav\t你 ni3 好 hao3"],
             "test": ["SSB00180001.wav 好 hao3"]}
    zh = [(0.0, 0.1, ""), (0.1, 0.2, "g"), (0.2, 0.45, "uang3"), (0.45, 0.5, "zh"),
          (0.5, 0.8, "ou1"), (0.8, 1.0, "sil")]
    for part, ls in lines.items():
        (root / part / "wav").mkdir(parents=True)
        (root / part / "content.txt").write_text("\n".join(ls) + "\n", encoding="utf-8")
        for line in ls:
            utt = line.split()[0][:-4]
            write_tone(root / part / "wav" / utt[:7] / f"{utt}.wav", 44100, 1.01)
            if utt != "SSB00050002":
                write_grid(grids / f"{utt}.TextGrid", zh)
    assert read_aishell_content(root / "train" / "content.txt")["SSB00050001"] == (
        "广州", ["guang3", "zhou1"])
    recs, rep = ingest_items(list(aishell3_items(root)), IngestOptions("aishell3", "zh", grids),
                             tmp_path)
    assert [r["id"] for r in recs] == ["aishell3:SSB00050001", "aishell3:SSB00180001"]
    _check_all_sum(recs)
    r = recs[0]
    assert r["phone_set"] == "pinyin" and r["text"] == "广州" and r["speaker"] == "aishell3:SSB0005"
    assert r["phones"] == [SIL, "pinyin:g", "pinyin:uang3", "pinyin:zh", "pinyin:ou1", SIL]
    assert r["extra"]["pinyin"] == "guang3 zhou1" and recs[1]["split"] == "test"
    assert [(s.kind, s.item) for s in rep.items] == [(R.MISSING_ALIGNMENT, "aishell3:SSB00050002")]
    with pytest.raises(FileNotFoundError, match="AISHELL-3 layout"):
        list(aishell3_items(tmp_path / "mfa"))


def test_generic_textgrid_pairs(tmp_path):
    audio = tmp_path / "audio"
    ipa = [(0.05, 0.2, "h"), (0.2, 0.3, "ə"), (0.3, 0.5, "l"), (0.5, 0.9, "oʊ")]
    for i, (sr, spk) in enumerate([(16000, "alice"), (48000, "bob"), (22050, "bob")]):
        wav = audio / spk / f"u{i}.wav"
        write_tone(wav, sr, 1.0, channels=2 if i == 1 else 1)
        write_grid(wav.with_suffix(".TextGrid"), ipa, [(0.05, 0.9, "hello")], tail=0.3)
    (audio / "bob" / "u1.lab").write_text("hello there")
    (audio / "alice" / "broken.wav").write_bytes(b"\x00" * 10)
    (audio / "alice" / "broken.TextGrid").write_text("File type = \"ooTextFile\"\ngarbage")
    out = tmp_path / "out"
    assert cli(["ingest", "textgrid", str(audio), "--corpus", "mine", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in (out / "mine.jsonl").read_text().splitlines()]
    assert [r["speaker"] for r in recs] == ["mine:alice", "mine:bob", "mine:bob"]
    _check_all_sum(recs)
    assert recs[0]["phone_set"] == "ipa" and recs[0]["phones"][0] == SIL  # starts at 0.05 s
    assert recs[0]["text"] == "hello" and recs[1]["text"] == "hello there"
    rep = json.loads((out / "mine.report.json").read_text())
    assert rep["skipped"] == 1 and rep["items"][0]["item"] == "mine:broken"


def test_textgrid_reader_and_conversion(tmp_path):
    p = tmp_path / "a.TextGrid"
    write_grid(p, EN_PHONES, fmt="short_textgrid")
    iv, words = read_intervals(p)
    assert [x[2] for x in iv] == ["", "HH", "AH0", "L", "OW1", "sp", "spn", ""]
    assert guess_phone_set([x[2] for x in iv]) == "arpabet"
    assert guess_phone_set(["g", "uang3"]) == "pinyin" and guess_phone_set(["ə"]) == "ipa"
    rng = np.random.default_rng(0)
    for total in rng.integers(1, 200, 50):  # any audio length: sums exactly
        ph, d = to_durations(iv, int(total), "arpabet")
        assert sum(d) == total and min(d) >= 0
    assert sum(to_durations(iv, 88, "arpabet", keep_stress=True)[1]) == 88
    # a gap between intervals becomes silence
    ph, d = to_durations([(0.0, 0.2, "AA"), (0.4, 0.6, "B")], 60, "arpabet")
    assert ph == ["arpabet:AA", SIL, "arpabet:B", SIL] and sum(d) == 60
    (tmp_path / "n.TextGrid").write_text("not a textgrid")
    with pytest.raises(ValueError, match="unreadable TextGrid"):
        read_intervals(tmp_path / "n.TextGrid")
    write_grid(tmp_path / "w.TextGrid", [(0, 1, "a")])
    with pytest.raises(ValueError, match="no 'words' tier|no 'syll' tier"):
        read_intervals(tmp_path / "w.TextGrid", tier="syll")


def test_frames_follow_soxr_length(tmp_path):
    # A file at 24 kHz with an odd length: the manifest's T must equal the loaded mel's.
    from secoustic_jax.data.features import utterance_mel

    n = write_tone(tmp_path / "x.wav", 24000, 1.23456)
    assert utterance_mel(tmp_path / "x.wav").shape[0] == align.frames_for(n, 24000)
