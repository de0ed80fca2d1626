"""grain pipeline on the tiny corpus: alignment of crops, sharding, resume, bad data."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
from _data_helpers import tiny_corpus

from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.crops import LOG_FLOOR, make_example, segment_labels
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.phones import PhoneInventory
from secoustic_jax.data.pipeline import load_entries, make_eval_iterator, make_train_iterator

CFG = PipelineConfig(segment_frames=256, max_phones=96, num_threads=1, prefetch_buffer=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def inv(corpus):
    return PhoneInventory.load(corpus)


def _close(it):
    it.close()


def test_crops_keep_alignment(corpus, inv):
    entries, _, _ = load_entries([corpus / "train.jsonl"], inv, CFG)
    it = make_train_iterator([corpus / "train.jsonl"], inv, CFG, seed=3, global_batch_size=4)
    seen = 0
    for _ in range(3):
        b = next(it)
        for i in range(4):
            e = entries[b["utt_index"][i]]
            ids, d = np.asarray(e.ids), np.asarray(e.durations)
            s, n, h = int(b["crop_start"][i]), CFG.segment_frames, CFG.token_hop
            assert s % CFG.crop_multiple == 0 and b["mel_mask"][i].all()
            full = utterance_mel(e.audio)
            np.testing.assert_array_equal(b["mel"][i], full[s:s + n])  # same host front end
            # the phone under every frame equals the phone of the original alignment
            np.testing.assert_array_equal(b["frame_phones"][i], align.expand(ids, d)[s:s + n])
            tok = align.expand(ids, align.token_durations(d, h))
            np.testing.assert_array_equal(b["token_phones"][i], tok[s // h:(s + n) // h])
            k = int((b["phones"][i] > 0).sum())
            ph, pd, pt = b["phones"][i][:k], b["phone_durations"][i][:k], \
                b["phone_token_durations"][i][:k]
            assert pd.sum() == n and pt.sum() == n // h  # exact sums, 86 Hz and 21.5 Hz
            np.testing.assert_array_equal(align.expand(ph, pd), b["frame_phones"][i])
            np.testing.assert_array_equal(align.token_durations(pd, h), pt)  # local == global
            np.testing.assert_array_equal(ph[b["frame_phone_index"][i]], b["frame_phones"][i])
            L = int(b["prompt_lengths"][i])
            assert L == min(300, e.frames)
            starts = [t for t in range(e.frames - L + 1)
                      if np.array_equal(full[t:t + L], b["prompt_mel"][i][:L])]
            assert starts, "prompt is not a window of the same utterance"
            seen += 1
    assert seen == 12
    _close(it)


def test_short_utterance_padding_and_labels():
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((50, 80)).astype(np.float32)
    ids, d = np.array([5, 6, 7], np.int32), np.array([10, 0, 40])
    ex = make_example(mel, ids, d, segment=64, hop=4, multiple=4, prompt_frames=300,
                      max_phones=8, pad_short=True, rng=rng)
    assert ex["mel_mask"].sum() == 50 and (ex["mel"][50:] == LOG_FLOOR).all()
    assert (ex["frame_phones"][50:] == 0).all() and ex["phone_durations"].sum() == 50
    assert ex["phone_token_durations"].sum() == 13 and (ex["token_phones"][13:] == 0).all()
    assert list(ex["phones"][:3]) == [5, 6, 7]  # zero-length phone inside the crop kept
    assert ex["prompt_lengths"] == 50 and (ex["prompt_mel"][50:] == LOG_FLOOR).all()
    with pytest.raises(ValueError, match="exceed max_phones"):
        segment_labels(ids, d, 0, 48, 4, 2)


def test_random_crops_property():
    rng = np.random.default_rng(7)
    for _ in range(200):
        d = rng.integers(0, 15, int(rng.integers(1, 50)))
        T = int(d.sum())
        if T < 8:
            continue
        ids = rng.integers(4, 60, len(d)).astype(np.int32)
        n = int(rng.integers(1, T // 4 + 1)) * 4
        s = int(rng.integers(0, (T - n) // 4 + 1)) * 4
        lab = segment_labels(ids, d, s, n, 4, 64)
        np.testing.assert_array_equal(lab["frame_phones"], align.expand(ids, d)[s:s + n])
        k = int((lab["phones"] > 0).sum())  # real phone IDs are >= 1
        assert lab["phone_durations"][:k].sum() == n
        assert lab["phone_token_durations"][:k].sum() == n // 4
        tok = align.expand(ids, align.token_durations(d, 4))[s // 4:(s + n) // 4]
        np.testing.assert_array_equal(lab["token_phones"], tok)


def test_shards_disjoint_and_cover(corpus, inv):
    paths = [corpus / "train.jsonl", corpus / "valid.jsonl"]
    cfg = PipelineConfig(segment_frames=256, shuffle=False, num_epochs=1, num_threads=1)
    entries, _, _ = load_entries(paths, inv, cfg)
    got = []
    for pi in range(3):
        it = make_train_iterator(paths, inv, cfg, seed=0, process_index=pi, process_count=3,
                                 global_batch_size=3)
        idx = [int(i) for b in it for i in b["utt_index"]]
        # drop-remainder: each host yields floor(shard / 1) = the whole shard with B_local 1
        assert len(idx) == len(range(pi, len(entries), 3))
        got.append(set(idx))
    assert not (got[0] & got[1]) and not (got[0] & got[2]) and not (got[1] & got[2])
    assert set().union(*got) == set(range(len(entries)))


def test_shuffle_differs_per_epoch_and_seed(corpus, inv):
    cfg = PipelineConfig(segment_frames=256, num_epochs=2, num_threads=1)
    it = make_train_iterator([corpus / "train.jsonl"], inv, cfg, seed=1, global_batch_size=1)
    order = [int(b["utt_index"][0]) for b in it]
    n = len(order) // 2
    assert sorted(order[:n]) == sorted(order[n:]) and order[:n] != order[n:]
    it2 = make_train_iterator([corpus / "train.jsonl"], inv, cfg, seed=2, global_batch_size=1)
    assert [int(next(it2)["utt_index"][0]) for _ in range(n)] != order[:n]


def test_resume_exactly(corpus, inv):
    def run():
        return make_train_iterator([corpus / "train.jsonl"], inv, CFG, seed=11,
                                   global_batch_size=2)

    it = run()
    for _ in range(3):  # batch k = 3
        next(it)
    state = it.get_state()
    assert isinstance(state, bytes)  # what checkpoints store
    want = [next(it) for _ in range(4)]
    fresh = run()
    fresh.set_state(state)
    got = [next(fresh) for _ in range(4)]
    for a, b in zip(want, got):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert fresh.batches == 7
    it.set_state(json.loads(json.dumps(fresh.get_state_dict())))  # dict form works too
    np.testing.assert_array_equal(next(it)["mel"], next(fresh)["mel"])


def test_make_iterator_corpus_folder(corpus):
    from secoustic_jax.data.pipeline import make_iterator

    tr = make_iterator(corpus, "train", CFG, batch_size=2, shard_index=1, shard_count=2, seed=0)
    b = next(tr)
    assert b["mel"].shape == (2, 256, 80) and len(tr.inventory_labels) == len(tr.inventory)
    ev = make_iterator(corpus, "valid", CFG, batch_size=2)
    assert [int(v) for x in ev for v in x["valid"]] == [1, 1]


def _bad_corpus(corpus, tmp_path):
    """Copies of good records plus one bad item of every kind."""
    recs, _ = manifest.load_manifest(corpus / "train.jsonl")
    good = [dict(manifest.public(r), audio=str(manifest.audio_path(r))) for r in recs[:4]]
    base = good[0]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    x = sf.read(manifest.audio_path(recs[0]))[0].astype(np.float32)
    x[1000] = np.nan
    sf.write(tmp_path / "nan.wav", x, 22050, subtype="FLOAT")
    bad = [dict(base, id="bad:unreadable", audio="corrupt.wav"),
           dict(base, id="bad:nan", audio="nan.wav"),
           dict(base, id="bad:sum", durations=base["durations"][:-1] + [base["durations"][-1] + 1]),
           dict(base, id="bad:unknown", phones=["arpabet:NOPE"] + base["phones"][1:]),
           dict(base, id="bad:short", num_samples=256 * 100, duration=round(256 * 100 / 22050, 4),
                durations=[100] + [0] * (len(base["durations"]) - 1)),
           dict(base, id="bad:length", num_samples=base["num_samples"] + 2560,
                duration=round((base["num_samples"] + 2560) / 22050, 4),
                durations=base["durations"][:-1] + [base["durations"][-1] + 10])]
    path = manifest.write_manifest(tmp_path / "mixed.jsonl", good + bad)
    return path


def test_bad_items_skipped_with_reasons(corpus, inv, tmp_path):
    path = _bad_corpus(corpus, tmp_path)
    cfg = PipelineConfig(segment_frames=256, shuffle=False, num_epochs=1, num_threads=1)
    it = make_train_iterator([path], inv, cfg, seed=0, global_batch_size=1)
    idx = [int(b["utt_index"][0]) for b in it]  # the run never stops on bad data
    st = it.stats()
    assert len(idx) == 4
    man = {s["item"].split(" ")[-1].strip("()"): (s["kind"], s["reason"])
           for s in st["manifest"]["items"]}
    load = {s["item"]: (s["kind"], s["reason"]) for s in st["load"]["items"]}
    assert man["bad:sum"][0] == R.BAD_DURATIONS and "expected" in man["bad:sum"][1]
    assert man["bad:unknown"][0] == R.UNKNOWN_PHONES and "arpabet:NOPE" in man["bad:unknown"][1]
    assert man["bad:short"][0] == R.TOO_SHORT and "100 frames" in man["bad:short"][1]
    assert load["bad:unreadable"][0] == R.UNREADABLE_AUDIO and "corrupt.wav" in load[
        "bad:unreadable"][1]
    assert load["bad:nan"][0] == R.NAN_AUDIO and "NaN" in load["bad:nan"][1]
    assert load["bad:length"][0] == R.LENGTH_MISMATCH
    assert st["skipped_total"] == 6 and "unreadable_audio: 1" in it.report()
    cfg2 = PipelineConfig(segment_frames=256, shuffle=False, num_epochs=1, max_phones=4)
    it2 = make_train_iterator([path], inv, cfg2, seed=0, global_batch_size=1)
    assert list(it2) == [] and it2.stats()["load"]["by_kind"][R.TOO_MANY_PHONES] == 4


def test_eval_iterator_equal_batches_per_host(corpus, inv):
    paths = [corpus / "valid.jsonl", corpus / "test.jsonl", corpus / "test_unseen.jsonl"]
    n = sum(1 for p in paths for _ in open(p))
    counts, seen = [], []
    for pi in range(2):
        ev = make_eval_iterator(paths, inv, CFG, process_index=pi, process_count=2,
                                global_batch_size=4)
        bs = list(ev)
        counts.append(len(bs))
        seen += [int(i) for b in bs for i, v in zip(b["utt_index"], b["valid"]) if v]
        again = list(make_eval_iterator(paths, inv, CFG, process_index=pi, process_count=2,
                                        global_batch_size=4))
        for a, b in zip(bs, again):  # deterministic
            np.testing.assert_array_equal(a["mel"], b["mel"])
    assert counts[0] == counts[1] and sorted(seen) == list(range(n))


def test_config_errors(corpus, inv):
    with pytest.raises(ValueError, match="multiple of process_count"):
        make_train_iterator([corpus / "train.jsonl"], inv, CFG, seed=0, process_count=2,
                            global_batch_size=3)
    with pytest.raises(ValueError, match="multiple of token_hop"):
        make_train_iterator([corpus / "train.jsonl"], inv, PipelineConfig(segment_frames=250),
                            seed=0, global_batch_size=1)


_MESH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from secoustic_jax.config.data import PipelineConfig
    from secoustic_jax.data.phones import PhoneInventory
    from secoustic_jax.data.pipeline import make_train_iterator
    root = sys.argv[1]
    inv = PhoneInventory.load(root)
    cfg = PipelineConfig(segment_frames=128, num_threads=1)
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    it = make_train_iterator([root + "/train.jsonl"], inv, cfg, seed=5, global_batch_size=8,
                             mesh=mesh)
    ref = make_train_iterator([root + "/train.jsonl"], inv, cfg, seed=5, global_batch_size=8)
    b, r = next(it), next(ref)
    assert isinstance(b["mel"], jax.Array) and b["mel"].shape == (8, 128, 80)
    assert b["token_phones"].shape == (8, 32)
    assert len(b["mel"].sharding.device_set) == 8
    assert b["mel"].sharding.spec[0] == "data", b["mel"].sharding.spec
    for k in r:
        np.testing.assert_array_equal(np.asarray(b[k]), r[k])
    print("OK")
""")


def test_global_arrays_on_mesh(corpus):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(corpus)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


@pytest.mark.slow
def test_multiprocess_workers_match_in_process(corpus, inv):
    cfg0 = PipelineConfig(segment_frames=256, num_threads=1)
    cfg1 = PipelineConfig(segment_frames=256, num_threads=1, worker_count=2)
    a = make_train_iterator([corpus / "train.jsonl"], inv, cfg0, seed=4, global_batch_size=2)
    b = make_train_iterator([corpus / "train.jsonl"], inv, cfg1, seed=4, global_batch_size=2)
    for _ in range(3):
        x, y = next(a), next(b)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    state = b.get_state()
    want = next(b)
    b.set_state(state)
    np.testing.assert_array_equal(next(b)["mel"], want["mel"])
    b.close()


def test_prompt_from_another_utterance_of_the_same_speaker(corpus, inv):
    import dataclasses

    cfg = dataclasses.replace(CFG, prompt_source="other")
    entries, _, _ = load_entries([corpus / "train.jsonl"], inv, cfg)
    runs = []
    for _ in range(2):  # seeded: the same prompts twice
        it = make_train_iterator([corpus / "train.jsonl"], inv, cfg, seed=5, global_batch_size=4)
        runs.append([next(it) for _ in range(3)])
        _close(it)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a["prompt_mel"], b["prompt_mel"])
    for b in runs[0]:
        for i in range(4):
            e, p = entries[b["utt_index"][i]], entries[b["prompt_utt_index"][i]]
            assert p.index != e.index and p.speaker == e.speaker
            L = int(b["prompt_lengths"][i])
            assert L == min(300, p.frames)
            full = utterance_mel(p.audio)
            assert any(np.array_equal(full[t:t + L], b["prompt_mel"][i][:L])
                       for t in range(p.frames - L + 1)), "prompt is not a window of the other utterance"
    ev = make_eval_iterator([corpus / "train.jsonl"], inv, cfg, global_batch_size=4)
    b = next(ev)
    for i in range(4):
        e, p = entries[b["utt_index"][i]], entries[b["prompt_utt_index"][i]]
        assert p.index != e.index and p.speaker == e.speaker
    _close(ev)


def test_prompt_from_another_utterance_refuses_single_utterance_speakers(corpus, inv):
    import dataclasses

    from secoustic_jax.data.pipeline import prompt_pool

    cfg = dataclasses.replace(CFG, prompt_source="other")
    entries, _, _ = load_entries([corpus / "train.jsonl"], inv, cfg)
    lonely = [entries[0]] + [e for e in entries if e.speaker != entries[0].speaker]
    with pytest.raises(ValueError, match="needs >= 2 utterances per speaker"):
        prompt_pool(lonely)
    with pytest.raises(Exception, match="prompt_source"):
        dataclasses.replace(CFG, prompt_source="elsewhere").validate()
