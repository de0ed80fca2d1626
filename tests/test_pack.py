"""`data pack` and the packed source on the tiny corpus: round trip, equality with the
manifest source, host sharding, resume, determinism, resumable packing, bad input."""

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys

import grain
import numpy as np
import pytest
from _data_helpers import tiny_corpus

from secoustic_jax.cli import main
from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.config.model import MelConfig
from secoustic_jax.config.train import DataSourceConfig, ExperimentConfig
from secoustic_jax.data import packed_format as F
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.manifest import audio_path, load_manifest
from secoustic_jax.data.pack import PackOptions, pack_dataset
from secoustic_jax.data.packed_source import (PackedReader, make_packed_iterator,
                                              make_packed_train_iterator, packed_entries,
                                              verify_packed)
from secoustic_jax.data.phones import PhoneInventory
from secoustic_jax.data.pipeline import make_iterator, make_train_iterator
from secoustic_jax.training.data import make_source
from secoustic_jax.training.loop import data_inventory

CFG = PipelineConfig(segment_frames=256, max_phones=96, num_threads=1, prefetch_buffer=2)
QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory):
    """float16 mel, 4 records a shard (train: 4 shards), packed in this process."""
    out = tmp_path_factory.mktemp("packed16")
    pack_dataset(corpus, out, opts=PackOptions(records_per_shard=4, workers=1), **QUIET)
    return out


@pytest.fixture(scope="module")
def packed32(corpus, tmp_path_factory):
    """float32 mel and the waveform: bit-exact with the manifest pipeline."""
    out = tmp_path_factory.mktemp("packed32")
    pack_dataset(corpus, out, ("train", "valid"), **QUIET, opts=PackOptions(
        mel_dtype="float32", waveform=True, records_per_shard=5, workers=1))
    return out


def _records(packed, split):
    index = F.load_index(packed)
    info = index["splits"][split]
    entries, _, _ = packed_entries(info, dataclasses.replace(CFG, segment_frames=4))
    read = PackedReader(packed, info, 256)
    return index, [read.record(e) for e in entries]


def _same(a: dict, b: dict, mel_tol: float = 0.0):
    assert a.keys() == b.keys()
    for k in a:
        if "mel" in k and mel_tol:
            assert np.abs(a[k] - b[k]).max() <= mel_tol, k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_pack_roundtrip_mel_within_float16_bound_labels_exact(corpus, packed, packed32):
    inv = PhoneInventory.load(corpus)
    recs, _ = load_manifest(corpus / "train.jsonl")
    index, got = _records(packed, "train")
    _, exact = _records(packed32, "train")
    assert index["phones"] == list(inv.labels) and index["mel"] == dataclasses.asdict(MelConfig())
    assert [g["id"] for g in got] == [r["id"] for r in recs]
    for r, g, x in zip(recs, got, exact):
        mel = utterance_mel(audio_path(r))
        err = np.abs(g["mel"] - mel)
        # round to nearest float16 (10 mantissa bits): at most 2^-11 relative, 2^-8 for |x| < 16
        assert err.max() <= F.FLOAT16_BOUND and (err <= np.abs(mel) * 2.0 ** -11).all()
        np.testing.assert_array_equal(x["mel"], mel)  # float32 records are exact
        np.testing.assert_array_equal(g["phones"], inv.encode(r["phones"]))
        np.testing.assert_array_equal(g["durations"], r["durations"])
        assert (g["speaker"], g["split"], g["frames"]) == (r["speaker"], "train", mel.shape[0])
        assert g["wav"] is None and len(x["wav"]) // 256 == mel.shape[0]


def test_pack_is_deterministic_over_processes(corpus, packed, tmp_path):
    pack_dataset(corpus, tmp_path, opts=PackOptions(records_per_shard=4, workers=2), **QUIET)
    names = sorted(p.name for p in packed.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir()) and len(names) == 2 + 2 * 7
    for n in names:  # shards, sidecars, report and index: byte-identical
        assert (packed / n).read_bytes() == (tmp_path / n).read_bytes(), n


@pytest.mark.parametrize("source", ["same", "other"])
def test_packed_batches_equal_manifest_batches(corpus, packed, packed32, source):
    cfg = dataclasses.replace(CFG, prompt_source=source)
    want = make_iterator(corpus, "train", cfg, batch_size=4, seed=3)
    exact = make_packed_iterator(packed32, "train", cfg, batch_size=4, seed=3)
    half = make_packed_iterator(packed, "train", cfg, batch_size=4, seed=3)
    for _ in range(4):  # 16 examples > one epoch of 14: crosses the reshuffle
        w = next(want)
        _same(w, next(exact))
        _same(w, next(half), mel_tol=F.FLOAT16_BOUND)  # the documented mel rounding only
    assert half.speakers == want.speakers and half.inventory == want.inventory
    ev = list(make_iterator(corpus, "valid", CFG, batch_size=2))  # 1 utterance per speaker
    ev_packed = list(make_packed_iterator(packed32, "valid", CFG, batch_size=2))
    assert len(ev) == len(ev_packed) == 1
    _same(ev[0], ev_packed[0])


def test_two_hosts_read_disjoint_records_that_cover_the_split(corpus, packed):
    cfg = dataclasses.replace(CFG, shuffle=False, num_epochs=1)
    inv = PhoneInventory.load(corpus)
    seen = []
    for host in range(2):
        it = make_packed_train_iterator(packed, "train", cfg, seed=0, global_batch_size=2,
                                        shard_options=grain.sharding.ShardOptions(host, 2))
        ref = make_train_iterator([corpus / "train.jsonl"], inv, cfg, seed=0,
                                  process_index=host, process_count=2, global_batch_size=2)
        got = [int(b["utt_index"][0]) for b in it]
        assert got == [int(b["utt_index"][0]) for b in ref]  # the manifest source's shard
        seen.append(set(got))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(14))


HOST_WORKER = """
import json, sys
import grain
from absl import flags
flags.FLAGS.mark_as_parsed()
from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.data.packed_source import make_packed_train_iterator
root, host = sys.argv[1], int(sys.argv[2])
cfg = PipelineConfig(segment_frames=256, max_phones=96, num_threads=1, prefetch_buffer=2,
                     shuffle=False, num_epochs=1, host_split="shards")
it = make_packed_train_iterator(root, "train", cfg, seed=0, global_batch_size=2,
                                shard_options=grain.sharding.ShardOptions(host, 2))
print("RESULT" + json.dumps({"utts": [int(b["utt_index"][0]) for b in it],
                             "speakers": it.speakers}))
"""


def test_two_processes_read_disjoint_shard_files_that_cover_the_split(packed, tmp_path):
    """host_split="shards", two OS processes: each gets a copy of the dataset WITHOUT the
    other host's shard files, so finishing at all shows it never opens them."""
    files = [sh["file"] for sh in F.load_index(packed)["splits"]["train"]["shards"]]
    assert len(files) == 4  # records_per_shard 4, 14 records
    procs = []
    for host in range(2):
        root = shutil.copytree(packed, tmp_path / f"host{host}")
        for i, name in enumerate(files):
            if i % 2 != host:
                (root / name).unlink()
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        procs.append(subprocess.Popen([sys.executable, "-c", HOST_WORKER, str(root), str(host)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env))
    res = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        res.append(json.loads([x for x in out.splitlines() if x.startswith("RESULT")][-1][6:]))
    a, b = (set(r["utts"]) for r in res)
    # Shards 0, 2 (records 0-3, 8-11) to host 0; shards 1, 3 (4-7, 12-13) to host 1.
    assert a == {0, 1, 2, 3, 8, 9, 10, 11} and b == {4, 5, 6, 7, 12, 13}
    assert len(res[0]["utts"]) == 8 and len(res[1]["utts"]) == 6  # each record once
    assert res[0]["speakers"] == res[1]["speakers"]  # speaker ids from the whole catalog


def test_shard_split_needs_a_shard_per_host_and_a_packed_source(corpus, packed):
    cfg = dataclasses.replace(CFG, host_split="shards")
    with pytest.raises(F.PackedError, match="4 shard file.*fewer than the 5 hosts"):
        make_packed_train_iterator(packed, "train", cfg, seed=0, global_batch_size=5,
                                   shard_options=grain.sharding.ShardOptions(0, 5))
    with pytest.raises(ValueError, match="needs a packed source"):
        make_train_iterator([corpus / "train.jsonl"], PhoneInventory.load(corpus), cfg, seed=0,
                            global_batch_size=2)
    with pytest.raises(ConfigError, match="host_split"):
        dataclasses.replace(CFG, host_split="files").validate()
    # A host's reader refuses a record of another host's shard, naming it.
    info = F.load_index(packed)["splits"]["train"]
    entries, _, _ = packed_entries(info, CFG)
    with pytest.raises(F.PackedError, match="shard train-00001-of-00004.* not in this host"):
        PackedReader(packed, info, 256, [0, 2]).record(entries[4])


def test_reader_pickles_for_grain_workers(packed):
    index = F.load_index(packed)
    info = index["splits"]["valid"]
    entries, _, _ = packed_entries(info, CFG)
    read = pickle.loads(pickle.dumps(PackedReader(packed, info, 256)))
    utt, skip = read(entries[1])
    assert skip is None and utt[0].shape == (entries[1].frames, 80)


def test_resume_gives_the_uninterrupted_batches(packed):
    def run():
        return make_packed_iterator(f"file://{packed}", "train", CFG, batch_size=2, seed=11)

    it = run()
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(4)]
    fresh = run()
    fresh.set_state(state)
    for a in want:
        _same(a, next(fresh))
    assert fresh.batches == 7


def _copy(packed, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(packed, dst)
    return dst


def test_damaged_shards_are_named(packed, tmp_path):
    root = _copy(packed, tmp_path)
    shard = root / "train-00001-of-00004.arrayrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size: only the hash (or the reader) can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(F.PackedError, match="train-00001-of-00004.*sha256 mismatch"):
        make_packed_iterator(root, "train", CFG, batch_size=1, verify="sha256")
    with pytest.raises(F.PackedError, match="train-00001-of-00004.*sha256"):
        verify_packed(root)
    cfg = dataclasses.replace(CFG, shuffle=False, num_epochs=1)
    it = make_packed_iterator(root, "train", cfg, batch_size=1)  # size check passes
    assert len(list(it)) == 13  # the damaged record is skipped, never silently
    (skip,) = it.stats()["load"]["items"]
    assert skip["kind"] == "bad_record"
    assert "shard train-00001-of-00004.arrayrecord record 1" in skip["reason"], skip
    shard.write_bytes(bytes(data[:len(data) // 2]))  # truncated
    with pytest.raises(F.PackedError, match="train-00001-of-00004.*truncated"):
        make_packed_iterator(root, "train", CFG, batch_size=1)
    shard.unlink()
    with pytest.raises(F.PackedError, match="train-00001-of-00004.*missing"):
        make_packed_iterator(root, "train", CFG, batch_size=1)


def test_bad_records_are_named():
    with pytest.raises(F.PackedError, match="shard s-0 record 3: record does not decode"):
        F.decode_record(b"\x93garbage", "shard s-0 record 3")
    mel = np.zeros((8, 80), np.float32)
    data = F.encode_record(id="x:1", speaker="x", split="train", mel=mel, mel_dtype="float16",
                           phones=np.array([1, 5]), durations=np.array([3, 4]))
    with pytest.raises(F.PackedError, match=r"record 0 \(x:1\): durations sum to 7, not the 8"):
        F.decode_record(data, "shard s-0 record 0")
    mel[2, 3] = np.nan
    data = F.encode_record(id="x:1", speaker="x", split="train", mel=mel, mel_dtype="float32",
                           phones=None, durations=None)
    with pytest.raises(F.PackedError, match="1 non-finite"):
        F.decode_record(data, "shard s-0 record 0")


def test_index_hash_and_mel_config_are_checked(packed, tmp_path):
    root = _copy(packed, tmp_path)
    with pytest.raises(F.PackedError, match="differs from the model's mel config") as e:
        make_packed_iterator(root, "train", CFG, batch_size=1,
                             model_mel=MelConfig(n_mels=64, fmax=7600.0))
    assert "fmax: packed 8000.0 != model 7600.0" in str(e.value)
    assert "n_mels: packed 80 != model 64" in str(e.value) and "hop_length" not in str(e.value)
    with pytest.raises(F.PackedError, match="no split 'nope'"):
        make_packed_iterator(root, "nope", CFG, batch_size=1)
    index = json.loads((root / "index.json").read_text())
    index["splits"]["train"]["catalog"]["frames"][0] += 4
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(F.PackedError, match="index.json: content hash mismatch"):
        make_packed_iterator(root, "train", CFG, batch_size=1)


def test_repacking_keeps_valid_shards_and_refuses_a_foreign_output(corpus, packed, tmp_path):
    root = _copy(packed, tmp_path)
    keep = root / "train-00000-of-00004.arrayrecord"
    os.utime(keep, ns=(1, 1))  # a rewrite would change the mtime
    (root / "train-00002-of-00004.arrayrecord").unlink()  # lost
    bad = root / "train-00003-of-00004.arrayrecord"
    bad.write_bytes(bad.read_bytes()[:1000])  # torn
    (root / ".valid-00000-of-00001.arrayrecord.abcd.tmp").write_bytes(b"x")  # killed run
    pack_dataset(corpus, root, opts=PackOptions(records_per_shard=4, workers=1), **QUIET)
    assert keep.stat().st_mtime_ns == 1 and not list(root.glob(".*.tmp"))
    for p in packed.iterdir():  # everything back, byte for byte
        assert (root / p.name).read_bytes() == p.read_bytes(), p.name
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    with pytest.raises(F.PackedError, match="train-00000-of-00004.*different packing"):
        pack_dataset(corpus, root, opts=PackOptions(records_per_shard=4, workers=1,
                                                    mel_dtype="float32"), **QUIET)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # nothing lost


def test_data_pack_and_verify_commands(corpus, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["data", "pack", str(corpus), "--out", str(out), "--splits", "valid,test",
                 "--workers", "1", "--records-per-shard", "1"]) == 0
    assert sorted(F.load_index(out)["splits"]) == ["test", "valid"]
    assert main(["data", "verify", str(out)]) == 0
    assert "valid: 2 records verified" in capsys.readouterr().out
    assert main(["data", "verify", str(tmp_path / "none")]) == 2
    assert "no packed index" in capsys.readouterr().err


def test_training_source_kind_packed(packed):
    data = DataSourceConfig(kind="packed", packed=str(packed), pipeline=CFG)
    cfg = ExperimentConfig(data=data)
    src = make_source(cfg, 0, split="train", process_index=1, process_count=2, batch=4)
    b = next(src)
    seg = cfg.stages[0].segment_frames
    assert b["mel"].shape == (2, seg, 80) and (b["utt_index"] % 2 == 1).all()
    other = dataclasses.replace(cfg, codec=dataclasses.replace(
        cfg.codec, mel=dataclasses.replace(cfg.codec.mel, fmin=30.0)))
    with pytest.raises(F.PackedError, match="fmin: packed 0.0 != model 30.0"):
        make_source(other, 0, split="train", process_index=0, process_count=1, batch=1)
    assert data_inventory(cfg) == F.load_index(packed)["phones"]  # sizes the phone embedding
    with pytest.raises(ConfigError, match="needs data.packed"):
        DataSourceConfig(kind="packed").validate()
