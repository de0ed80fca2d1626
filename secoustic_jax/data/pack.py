"""`secoustic data pack`: corpus splits -> sharded ArrayRecord files + a JSON index.

    index = pack_dataset("cache/corpus", "cache/packed", splits=("train", "valid"),
                         opts=PackOptions(records_per_shard=256, workers=2))

Per split, the manifest records that pass `load_manifest` (the same filter the manifest
pipeline applies, so record k of the packed split is manifest record k) are cut into
contiguous shards of `records_per_shard`. A process pool writes the shards; each record
is the full-utterance log-mel of the pipeline's front end (float32 rounded to
`mel_dtype`), its phone IDs and durations, optionally the int16 22.05 kHz waveform
(format: `packed_format`). Every record is decoded back and validated before it is kept.

Deterministic (same manifest and options -> byte-identical shards and index) and
resumable: a shard is written under a temporary name and renamed when complete, after its
sidecar `<shard>.done.json` (plan hash, sha256, catalog). A rerun keeps every shard whose
sidecar has the same plan hash and whose bytes match its sha256; an existing shard of a
*different* plan stops the run (naming it) instead of being overwritten. Audio that fails
to load is skipped and reported (pack.report.json), never packed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import pathlib

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from secoustic_jax.atomic import atomic_path, write_text
from secoustic_jax.audio.io import AudioError, load_audio
from secoustic_jax.audio.mel import log_mel_numpy
from secoustic_jax.config.data import SPLITS
from secoustic_jax.config.model import MelConfig
from secoustic_jax.data import packed_format as F
from secoustic_jax.data import report as R
from secoustic_jax.data.manifest import audio_path, load_manifest, num_frames, public
from secoustic_jax.data.phones import PhoneInventory


@dataclasses.dataclass(frozen=True)
class PackOptions:
    """What goes into the records and how they are sharded."""

    mel: MelConfig = dataclasses.field(default_factory=MelConfig)
    mel_dtype: str = "float16"  # or "float32" (bit-exact with the manifest pipeline)
    waveform: bool = False  # also store the int16 22.05 kHz waveform
    records_per_shard: int = 256
    require_alignment: bool = True  # stage 2 records; False also packs unaligned ones
    workers: int = 2  # process pool over shards (1 = in this process)

    def validate(self) -> None:
        if self.mel_dtype not in F.MEL_DTYPES:
            raise ValueError(f"mel_dtype must be one of {F.MEL_DTYPES}, got {self.mel_dtype!r}")
        if self.records_per_shard < 1 or self.workers < 1:
            raise ValueError("records_per_shard and workers must be >= 1")


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard to write (picklable: plain records and options)."""

    path: str
    split: str
    records: tuple  # manifest records (dicts with `_root`)
    ids: tuple  # their phone-ID tuples (None when unaligned)
    plan: str  # hash of everything that determines the shard's bytes
    opts: PackOptions


def _plan_hash(split, index, count, records, labels, opts: PackOptions) -> str:
    blob = {"format": [F.FORMAT, F.VERSION, F.RECORD_FORMAT, F.WRITER_OPTIONS], "split": split,
            "shard": [index, count], "mel": F.mel_dict(opts.mel), "mel_dtype": opts.mel_dtype,
            "waveform": opts.waveform, "phones": list(labels),
            "records": [public(r) for r in records]}
    return hashlib.sha256(F.canonical(blob)).hexdigest()


def plan_split(root: pathlib.Path, split: str, inventory: PhoneInventory, opts: PackOptions,
               out: pathlib.Path) -> tuple[list[ShardJob], R.SkipReport]:
    """`<root>/<split>.jsonl` -> shard jobs (contiguous runs of the good records) + report."""
    recs, rep = load_manifest(root / f"{split}.jsonl", require_alignment=opts.require_alignment,
                              inventory=inventory)
    n = opts.records_per_shard
    count = max(-(-len(recs) // n), 1) if recs else 0
    jobs = []
    for i in range(count):
        chunk = tuple(recs[i * n:(i + 1) * n])
        ids = tuple(tuple(inventory.encode(r["phones"])) if r.get("phones") else None
                    for r in chunk)
        jobs.append(ShardJob(str(out / F.shard_name(split, i, count)), split, chunk, ids,
                             _plan_hash(split, i, count, chunk, inventory.labels, opts), opts))
    return jobs, rep


def _utterance(rec: dict, ids, opts: PackOptions):
    """-> (record bytes, catalog row) or raises AudioError / ValueError naming the problem."""
    wav, _ = load_audio(audio_path(rec), target_sr=opts.mel.sample_rate)
    mel = log_mel_numpy(wav, opts.mel).astype(np.float32)
    if mel.shape[0] != num_frames(rec):
        raise ValueError(f"audio gives {mel.shape[0]} frames, manifest says {num_frames(rec)}")
    if opts.mel_dtype == "float16" and np.abs(mel).max() >= 65504:
        raise ValueError("log-mel magnitude exceeds the float16 range")
    pcm = None
    if opts.waveform:
        pcm = np.clip(np.round(np.asarray(wav, np.float64) * 32768), -32768, 32767).astype(np.int16)
    durs = rec.get("durations") if ids is not None else None
    data = F.encode_record(id=rec["id"], speaker=rec["speaker"], split=rec["split"], mel=mel,
                           mel_dtype=opts.mel_dtype, phones=ids, durations=durs, wav=pcm)
    back = F.decode_record(data, rec["id"], hop=opts.mel.hop_length)  # validates the record
    return data, (rec["id"], rec["speaker"], int(back["frames"]), ids is not None)


def write_shard(job: ShardJob) -> dict:
    """Writes one shard (temp name, renamed when complete) -> its sidecar dict."""
    target = pathlib.Path(job.path)
    rows, skips = [], []
    with atomic_path(target, suffix=".tmp") as tmp:
        writer = ArrayRecordWriter(tmp, F.WRITER_OPTIONS)
        try:
            for rec, ids in zip(job.records, job.ids):
                where = f"{target.name} record {len(rows)} ({rec['id']}, {job.split}.jsonl:" \
                        f"{rec['_line']})"
                try:
                    data, row = _utterance(rec, ids, job.opts)
                except AudioError as e:
                    skips.append([where, R.UNREADABLE_AUDIO, str(e)])
                    continue
                except ValueError as e:
                    skips.append([where, R.BAD_RECORD, str(e)])
                    continue
                writer.write(data)
                rows.append(row)
        finally:
            writer.close()
        tmp_path = F.as_path(tmp)
        side = {"plan": job.plan, "file": target.name, "records": len(rows),
                "bytes": tmp_path.stat().length, "sha256": F.file_sha256(tmp_path),
                "catalog": {k: [r[i] for r in rows] for i, k in
                            enumerate(("id", "speaker", "frames", "aligned"))},
                "skipped": skips}
        write_text(str(target) + F.DONE_SUFFIX, json.dumps(side, sort_keys=True, indent=1))
    return side


def finished(job: ShardJob) -> dict | None:
    """The sidecar of an already written, intact shard of this plan, else None.

    Raises PackedError when the shard belongs to a different plan (a different manifest
    or options): it is left alone, not overwritten."""
    target = pathlib.Path(job.path)
    done = pathlib.Path(str(target) + F.DONE_SUFFIX)
    if not done.is_file():
        return None
    try:
        side = json.loads(done.read_text())
    except json.JSONDecodeError:
        return None  # torn sidecar (cannot happen with atomic writes): rebuild the shard
    if side.get("plan") != job.plan:
        if target.is_file():
            raise F.PackedError(f"{target}: the output already holds a shard of a different "
                                f"packing (other manifest or options); it is kept - pack "
                                f"into another --out folder")
        return None
    if not target.is_file() or target.stat().st_size != side["bytes"]:
        return None
    return side if F.file_sha256(F.as_path(target)) == side["sha256"] else None


def _split_entry(sides: list[dict]) -> dict:
    shards = [{k: s[k] for k in ("file", "records", "bytes", "sha256")} for s in sides]
    catalog = {k: [v for s in sides for v in s["catalog"][k]]
               for k in ("id", "speaker", "frames", "aligned")}
    return {"shards": shards, "records": len(catalog["id"]), "frames": sum(catalog["frames"]),
            "catalog": catalog}


def build_index(splits: dict[str, list[dict]], inventory: PhoneInventory,
                opts: PackOptions) -> dict:
    """Index of a packed dataset from each split's shard sidecars (in shard order).

    Fields: format, version, record_format, writer_options, mel (MelConfig fields),
    mel_dtype, waveform, phones (inventory labels, ID = position), splits (per split:
    shards [{file, records, bytes, sha256}], records, frames, catalog {id, speaker, frames,
    aligned} with one entry per record in key order), totals {records, frames, shards,
    hours} and content_hash (sha256 of the canonical JSON of all other fields)."""
    per = {s: _split_entry(v) for s, v in splits.items()}
    frames = sum(p["frames"] for p in per.values())
    index = {"format": F.FORMAT, "version": F.VERSION, "record_format": F.RECORD_FORMAT,
             "writer_options": F.WRITER_OPTIONS, "mel": F.mel_dict(opts.mel),
             "mel_dtype": opts.mel_dtype, "waveform": opts.waveform,
             "phones": list(inventory.labels), "splits": per,
             "totals": {"records": sum(p["records"] for p in per.values()), "frames": frames,
                        "shards": sum(len(p["shards"]) for p in per.values()),
                        "hours": round(frames / opts.mel.frame_rate / 3600, 4)}}
    index["content_hash"] = F.content_hash(index)
    return index


def _remove_stale_temps(out: pathlib.Path) -> None:
    """Deletes the temp shards a killed run left (atomic_path names them `.<shard>.<random>.tmp`)."""
    for p in out.glob(f".*{F.SHARD_SUFFIX}.*.tmp"):
        p.unlink(missing_ok=True)


def pack_dataset(root, out, splits=None, opts: PackOptions | None = None,
                 log=print) -> dict:
    """Packs `<root>/<split>.jsonl` (+ `<root>/phones.json`) into `out`; returns the index.

    `splits`: names to pack (default: every split of SPLITS whose manifest exists). Writes
    the shards, their sidecars, `pack.report.json` and, last, `index.json` (atomically)."""
    opts = opts or PackOptions()
    opts.validate()
    root, out = pathlib.Path(root), pathlib.Path(str(F.as_path(out)))
    splits = list(splits or [s for s in SPLITS if (root / f"{s}.jsonl").is_file()])
    if not splits:
        raise FileNotFoundError(f"no split manifests (<split>.jsonl) under {root}")
    inventory = PhoneInventory.load(root)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    plans, report = {}, R.SkipReport("pack")
    for split in splits:
        plans[split], rep = plan_split(root, split, inventory, opts, out)
        report.merge(rep)
    jobs = [j for s in splits for j in plans[s]]
    kept = {j.path: side for j in jobs if (side := finished(j)) is not None}  # may refuse
    todo = [j for j in jobs if j.path not in kept]
    log(f"{len(kept)} finished shard(s) kept, {len(todo)} to write")
    if opts.workers > 1 and len(todo) > 1:
        with mp.get_context("spawn").Pool(min(opts.workers, len(todo))) as pool:
            written = pool.map(write_shard, todo, chunksize=1)
    else:
        written = [write_shard(j) for j in todo]
    by_path = {**kept, **dict(zip((j.path for j in todo), written))}
    sides = [by_path[j.path] for j in jobs]
    for s in sides:
        for item, kind, why in s["skipped"]:
            report.skip(item, kind, why)
    index = build_index({s: [by_path[j.path] for j in plans[s]] for s in splits}, inventory, opts)
    write_text(out / "pack.report.json", json.dumps(report.to_dict(), indent=1))
    write_text(out / F.INDEX_NAME, json.dumps(index, indent=1, ensure_ascii=False))
    log(report.summary())
    log(f"packed {index['totals']['records']} records ({index['totals']['hours']} h) into "
        f"{index['totals']['shards']} shards under {out}")
    return index
