"""Manifest records, validation, phone normalisation, inventory, seconds -> frames."""

import json

import numpy as np
import pytest

from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.phones import (SIL, SPN, WB, PhoneError, PhoneInventory, arpabet,
                                       ipa_sequence, normalise, pinyin)


def _rec(**kw):
    base = dict(id="x:1", corpus="x", audio="a.wav", sample_rate=22050, num_samples=22050 * 2,
                speaker="x:s", language="en", text="hi", split="train", phone_set="arpabet",
                phones=[SIL, "arpabet:HH", "arpabet:AY", SIL], durations=[20, 40, 60, 52])
    base.update(kw)
    return manifest.make_record(**base)


def test_round_trip(tmp_path):
    recs = [_rec(id=f"x:{i}", text=f"é {i}", extra={"voice": "v"}) for i in range(5)]
    path = manifest.write_manifest(tmp_path / "m.jsonl", recs)
    for i in range(5):
        (tmp_path / "a.wav").write_bytes(b"")
    back, rep = manifest.load_manifest(path, require_alignment=True, check_files=True)
    assert rep.skipped == 0 and rep.kept == 5
    assert [manifest.public(r) for r in back] == recs
    assert back[0]["duration"] == 2.0 and manifest.num_frames(back[0]) == 172
    assert list(back[0]) [:3] == ["id", "corpus", "audio"]


def test_validation_reports_every_bad_line(tmp_path):
    inv = PhoneInventory([SIL, "arpabet:HH", "arpabet:AY"])
    lines = [
        json.dumps(_rec(id="x:good")),
        "{not json",
        json.dumps({k: v for k, v in _rec(id="x:nospk").items() if k != "speaker"}),
        json.dumps(_rec(id="x:sum", durations=[20, 40, 60, 51])),
        json.dumps(_rec(id="x:unk", phones=[SIL, "arpabet:ZH", "arpabet:AY", SIL])),
        json.dumps(_rec(id="x:len", durations=[20, 40, 112])),
        json.dumps(_rec(id="x:split", split="dev")),
        json.dumps(dict(_rec(id="x:dur"), duration=9.0)),
        json.dumps(_rec(id="x:good")),
        json.dumps(_rec(id="x:neg", durations=[-1, 41, 60, 52])),
        json.dumps([1, 2]),
        json.dumps(dict(_rec(id="x:float"), durations=[20.0, 40, 60, 52])),
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(lines) + "\n\n")
    recs, rep = manifest.load_manifest(p, inventory=inv, require_alignment=True)
    assert [r["id"] for r in recs] == ["x:good"]
    by_line = {s.item.split(" ")[0]: s for s in rep.items}
    expect = {2: (R.BAD_RECORD, "invalid JSON"), 3: (R.BAD_RECORD, "missing field 'speaker'"),
              4: (R.BAD_DURATIONS, "sum to 171, expected 172"),
              5: (R.UNKNOWN_PHONES, "arpabet:ZH"), 6: (R.BAD_DURATIONS, "4 phones but 3"),
              7: (R.BAD_RECORD, "split 'dev'"), 8: (R.BAD_RECORD, "duration 9.0"),
              9: (R.DUPLICATE_ID, "duplicate id"), 10: (R.BAD_DURATIONS, "negative"),
              11: (R.BAD_RECORD, "not a JSON object"), 12: (R.BAD_DURATIONS, "integers")}
    assert set(by_line) == {f"m.jsonl:{n}" for n in expect}
    for n, (kind, text) in expect.items():
        s = by_line[f"m.jsonl:{n}"]
        assert s.kind == kind and text in s.reason, s
    assert rep.skipped == len(expect) and "m.jsonl:4" in rep.summary()


def test_missing_alignment_only_required_in_stage2(tmp_path):
    rec = _rec()
    for k in ("phone_set", "phones", "durations"):
        rec.pop(k)
    assert manifest.validate_record(rec) == []
    assert manifest.validate_record(rec, require_alignment=True)[0][0] == R.MISSING_ALIGNMENT


def test_frame_count_rule():
    # data.md §1: N22 = floor(n * 22050 / sr + 1/2); T = floor(N22 / 256).
    assert align.frames_for(24000, 24000) == 22050 // 256
    assert align.frames_for(16000 * 3, 16000) == 66150 // 256
    assert align.frames_for(1, 44100) == 0
    assert manifest.num_frames(_rec(sample_rate=16000, num_samples=160)) == 0


def test_arpabet_and_radio():
    assert arpabet("AH0") == "arpabet:AH" and arpabet("AH0", keep_stress=True) == "arpabet:AH0"
    assert [arpabet(x) for x in ("", "sil", "sp", "pau", "spn", "+NOISE+", "SIL")] == [
        SIL, SIL, SIL, SIL, SPN, SPN, SIL]
    assert [arpabet(x) for x in ("ax", "axr", "dx", "el", "em", "en", "hv", "nx")] == [
        "arpabet:" + p for p in ("AH", "ER", "D", "L", "M", "N", "HH", "N")]
    with pytest.raises(PhoneError, match="unknown ARPAbet"):
        arpabet("QQ")
    assert pinyin("uang3") == "pinyin:uang3" and pinyin("sil") == SIL
    with pytest.raises(PhoneError):
        pinyin("ʂ")
    with pytest.raises(PhoneError, match="unknown phone set"):
        normalise(["a"], [1], "klingon")


def test_ipa_rules():
    labels = ["^", "h", "ə", "l", "ˈ", "o", "ʊ", " ", "w", "ˈ", "ɜ", "ː", "l", "d", ".", "$"]
    durs = list(range(1, 17))
    phones, d = ipa_sequence(labels, durs)
    assert phones == [SIL, "ipa:h", "ipa:ə", "ipa:l", "ipa:o", "ipa:ʊ", WB, "ipa:w", "ipa:ɜː",
                      "ipa:l", "ipa:d", SIL, SIL]
    # stress durations move to the next phone, the length mark's to the previous one
    assert d == [1, 2, 3, 4, 5 + 6, 7, 8, 9, 10 + 11 + 12, 13, 14, 15, 16]
    assert sum(d) == sum(durs)


def test_inventory(tmp_path):
    inv = PhoneInventory(["arpabet:B", SIL, "arpabet:A", "ipa:x"])
    assert inv.labels[:4] == ("<pad>", SIL, SPN, WB) and len(inv) == 7
    assert inv.id(SIL) == 1 and inv.encode(["arpabet:A", "arpabet:B"]) == [4, 5]
    with pytest.raises(KeyError, match="unknown phone"):
        inv.id("arpabet:Z")
    with pytest.raises(KeyError):
        inv.id("<pad>")
    p = inv.save(tmp_path)
    assert PhoneInventory.load(p) == inv == PhoneInventory.load(tmp_path)
    ext = inv.extended(["arpabet:AA", "ipa:x"])
    assert ext.labels[:7] == inv.labels and ext.labels[7:] == ("arpabet:AA",)
    assert PhoneInventory.load(ext.save(tmp_path / "e.json")).id("arpabet:AA") == 7
    (tmp_path / "bad.json").write_text('{"phones": ["a"], "size": 1}')
    with pytest.raises(ValueError, match="not a phone inventory"):
        PhoneInventory.load(tmp_path / "bad.json")


def test_ends_to_frames_rules():
    T = 100
    ph, d = align.durations_from_ends(["SIL", "a", "b"], [0.1, 0.5, 1.2], T)
    assert sum(d) == T and ph == ["SIL", "a", "b"]  # ends late (flite): clipped
    assert d[:2] == [align.seconds_to_boundary(0.1),
                     align.seconds_to_boundary(0.5) - align.seconds_to_boundary(0.1)]
    ph, d = align.durations_from_ends(["a", "SIL"], [0.5, 0.9], T)
    assert ph == ["a", "SIL"] and sum(d) == T  # ends early on a silence: extended
    ph, d = align.durations_from_ends(["a", "b"], [0.5, 0.9], T, start=0.2)
    assert ph == ["SIL", "a", "b", "SIL"] and sum(d) == T  # offset start + early end
    ph, d = align.durations_from_ends(["a", "b", "c"], [0.001, 0.002, 5.0], T)
    assert d == [0, 0, T]  # very short phones get zero frames
    with pytest.raises(align.AlignmentError, match="decrease"):
        align.durations_from_ends(["a", "b"], [0.5, 0.4], T)
    with pytest.raises(align.AlignmentError):
        align.durations_from_ends([], [], T)


def test_other_timing_forms():
    ph, d = align.durations_from_samples(["a", "b"], [256 * 7, 256 * 5], 12)
    assert d == [7, 5]  # piper: exact multiples of the hop
    ph, d = align.durations_from_starts(["a", "b"], [0.0, 0.5], 100)
    assert d == [align.seconds_to_boundary(0.5), 100 - align.seconds_to_boundary(0.5)]
    ph, d = align.durations_from_10ms(["SIL", "a"], [0, 30], [30, 20], 80)
    assert sum(d) == 80 and ph[-1] == SIL


def test_random_alignments_sum_exactly():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        total = int(rng.integers(1, 2000))
        ends = np.sort(rng.uniform(0, total * 256 / 22050 * rng.uniform(0.5, 1.5), n))
        ph, d = align.durations_from_ends(["a"] * n, ends.tolist(), total,
                                          start=float(rng.uniform(0, 0.1)))
        assert sum(d) == total and min(d) >= 0 and len(ph) == len(d)


def test_token_durations_cumulative_rounding():
    rng = np.random.default_rng(1)
    for _ in range(300):
        d = rng.integers(0, 12, int(rng.integers(1, 60)))
        if d.sum() == 0:
            continue
        t = align.token_durations(d, 4)
        total = int(d.sum())
        assert t.sum() == -(-total // 4) and (t >= 0).all()
        # boundaries never drift by more than half a token from E_j / 4
        b = np.cumsum(t)[:-1]
        assert np.all(np.abs(b - np.cumsum(d)[:-1] / 4) <= 0.5)
    assert list(align.token_durations([1, 1, 6], 4)) == [0, 1, 1]
