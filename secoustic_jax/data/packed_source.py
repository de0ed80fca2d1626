"""The packed source: the grain pipeline reading packed ArrayRecord shards (`data pack`).

    it = make_packed_train_iterator("gs://bucket/packed", "train", PipelineConfig(), seed=0,
                                    shard_options=grain.sharding.ShardOptions(
                                        jax.process_index(), jax.process_count()),
                                    global_batch_size=32, model_mel=config.codec.mel)

The index's catalog (id, speaker, frames, aligned per record) gives the entry list
without reading a shard, filtered exactly as `pipeline.load_entries` filters a manifest,
so entry k, the host shard `entries[shard_index::shard_count]`, the shuffle, the crops,
the prompt choice (also prompt_source="other") and `get_state` / `set_state` are those of
the manifest source. (`pipeline.host_split="shards"` divides whole shard files between
hosts instead: each opens only its own, and the batches differ from the manifest's.) The mel is read from the record instead of computed from audio:
with mel_dtype float32 the batches are bit-identical, with float16 the mel differs by at
most `packed_format.FLOAT16_BOUND` and everything else is identical.

On opening, the index's content hash is checked and every shard of the split must exist
with its indexed size (`verify="sha256"` also hashes the shards; "none" skips the
checks). A record that fails to read or decode later is skipped and counted, with the
shard and record in the reason (bad data never stops a run).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools

import grain
import numpy as np

from secoustic_jax.config.data import FRAME_RATE, PipelineConfig
from secoustic_jax.config.model import MelConfig
from secoustic_jax.data import packed_format as F
from secoustic_jax.data import report as R
from secoustic_jax.data.pipeline import Entry, eval_batches, train_batches
from secoustic_jax.data.phones import PhoneInventory

VERIFY = ("none", "size", "sha256")


def split_info(index: dict, split: str, root) -> dict:
    if split not in index["splits"]:
        raise F.PackedError(f"{F.as_path(root) / F.INDEX_NAME}: no split {split!r} (packed: "
                            f"{sorted(index['splits'])})")
    return index["splits"][split]


def check_shards(root, info: dict, verify: str = "size", shards=None) -> None:
    """Every shard of a split (or those numbered in `shards`) exists with its indexed size
    (and sha256 with "sha256")."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    if verify == "none":
        return
    for i, sh in enumerate(info["shards"]):
        if shards is not None and i not in shards:
            continue
        path = F.as_path(root) / sh["file"]
        if not path.exists():
            raise F.PackedError(f"shard {path} is missing (the index lists it with "
                                f"{sh['records']} records)")
        size = path.stat().length
        if size != sh["bytes"]:
            raise F.PackedError(f"shard {path} is truncated or damaged: {size} bytes, the "
                                f"index says {sh['bytes']}")
        if verify == "sha256" and F.file_sha256(path) != sh["sha256"]:
            raise F.PackedError(f"shard {path}: sha256 mismatch (corrupt; repack it)")


def check_mel(index: dict, mel: MelConfig, root) -> None:
    """Refuses a packed mel config that differs from the model's, naming the fields."""
    diff = F.mel_mismatch(index["mel"], mel)
    if diff:
        raise F.PackedError(f"{F.as_path(root) / F.INDEX_NAME}: the packed log-mel differs "
                            f"from the model's mel config: " + "; ".join(diff))


class PackedReader:
    """Record reader of one packed split (the `read` protocol of pipeline.ManifestReader).

    Holds a grain ArrayRecordDataSource over the split's shards (opened lazily, picklable
    for grain workers); `entry.key` is the record key in the split. `shards`: open only
    these shard files (host_split="shards"); a key in another shard is an error.
    `features`: "mel" reads the log-mel, "waveform" the int16 waveform [N22]."""

    def __init__(self, root, info: dict, hop: int, shards=None, features: str = "mel"):
        self.features = features
        self.names = [sh["file"] for sh in info["shards"]]
        counts = [sh["records"] for sh in info["shards"]]
        self.starts = [0, *itertools.accumulate(counts)]
        self.hop = hop
        self.opened = sorted(range(len(counts)) if shards is None else shards)
        # Key offset of each opened shard inside the (concatenated) source.
        self.local = dict(zip(self.opened, itertools.accumulate(
            (counts[i] for i in self.opened), initial=0)))
        # "path[0:n]" skips opening every file just to count its records.
        paths = [f"{F.as_path(root) / self.names[i]}[0:{counts[i]}]" for i in self.opened
                 if counts[i]]
        self.source = grain.sources.ArrayRecordDataSource(paths) if paths else []

    def _shard(self, key: int) -> int:
        return bisect.bisect_right(self.starts, key) - 1

    def where(self, key: int) -> str:
        i = self._shard(key)
        return f"shard {self.names[i]} record {key - self.starts[i]}"

    def record(self, entry: Entry) -> dict:
        """Decoded record of `entry`; raises PackedError naming the shard and record."""
        where, i = self.where(entry.key), self._shard(entry.key)
        if i not in self.local:
            raise F.PackedError(f"{where}: not in this host's shards {self.opened}")
        try:
            data = self.source[self.local[i] + entry.key - self.starts[i]]
        except (RuntimeError, OSError, ValueError) as e:
            raise F.PackedError(f"{where}: unreadable ({e})") from e
        rec = F.decode_record(data, where, self.hop)
        if rec["id"] != entry.id or rec["frames"] != entry.frames:
            raise F.PackedError(f"{where}: holds {rec['id']} ({rec['frames']} frames), the index "
                                f"says {entry.id} ({entry.frames} frames)")
        return rec

    def __call__(self, entry: Entry):
        try:
            rec = self.record(entry)
        except F.PackedError as e:
            return None, (entry.id, R.BAD_RECORD, str(e))
        durs = None if rec["durations"] is None else rec["durations"].astype(np.int64)
        if self.features == "mel":
            return (rec["mel"], rec["phones"], durs), None
        if rec["wav"] is None:
            return None, (entry.id, R.BAD_RECORD, f"{self.where(entry.key)}: no waveform")
        return (rec["wav"], rec["phones"], durs), None

    def mel(self, entry: Entry):
        utt, skip = self(entry)
        return (None, skip) if skip else (utt[0], None)


def packed_entries(info: dict, cfg: PipelineConfig, speakers: list[str] | None = None
                   ) -> tuple[list[Entry], list[str], R.SkipReport]:
    """Catalog -> (entries, sorted speaker names, report), filtered like load_entries:
    unaligned records dropped when cfg.require_alignment, then crops too short."""
    cat, rep = info["catalog"], R.SkipReport("packed index")
    keys = []
    for k, (uid, aligned) in enumerate(zip(cat["id"], cat["aligned"])):
        if cfg.require_alignment and not aligned:
            rep.skip(uid, R.MISSING_ALIGNMENT, "no phones/durations (stage 2 needs them)")
            continue
        keys.append(k)
        rep.keep(cat["frames"][k] / FRAME_RATE)
    if speakers is None:
        speakers = sorted({cat["speaker"][k] for k in keys})
    spk = {s: i for i, s in enumerate(speakers)}
    out = []
    for k in keys:
        uid, frames, name = cat["id"][k], cat["frames"][k], cat["speaker"][k]
        if frames < cfg.segment_frames and not cfg.pad_short:
            rep.skip(uid, R.TOO_SHORT, f"{frames} frames < crop of {cfg.segment_frames}")
        elif name not in spk:
            rep.skip(uid, R.BAD_RECORD, f"speaker {name!r} not in the speaker list")
        else:
            out.append(Entry(len(out), uid, f"packed record {k}", spk[name], frames, None, None,
                             key=k))
    return out, speakers, rep


def _open(root, split: str, cfg: PipelineConfig, model_mel, verify: str, speakers,
          shard_options=None, by_shards: bool = False):
    """Index checks -> (entries, speakers, report, inventory, reader). `by_shards`: only this
    host's shard files (host_shards) are checked and opened, and only their entries kept;
    entry indices and speaker ids still come from the whole catalog, so hosts agree."""
    cfg.validate()
    index = F.load_index(root)
    check_mel(index, model_mel if model_mel is not None else cfg.mel, root)
    info = split_info(index, split, root)
    own = host_shards(info, *_shard(shard_options)) if by_shards else None
    check_shards(root, info, verify, own)
    entries, speakers, rep = packed_entries(info, cfg, speakers)
    if own is not None:
        starts, mine = [0, *itertools.accumulate(sh["records"] for sh in info["shards"])], set(own)
        entries = [e for e in entries if bisect.bisect_right(starts, e.key) - 1 in mine]
    inventory = PhoneInventory(index["phones"], ordered=True)
    return entries, speakers, rep, inventory, _reader(root, index, info, cfg, own)


def _reader(root, index: dict, info: dict, cfg: PipelineConfig, shards=None) -> PackedReader:
    if cfg.features == "waveform" and not index["waveform"]:
        raise F.PackedError(f"{F.as_path(root) / F.INDEX_NAME}: pipeline.features='waveform' "
                            f"needs waveforms; this dataset was packed without --waveform")
    return PackedReader(root, info, index["mel"]["hop_length"], shards, cfg.features)


def _shard(opts) -> tuple[int, int]:
    opts = opts or grain.sharding.ShardOptions(0, 1)
    if not 0 <= opts.shard_index < opts.shard_count:
        raise ValueError(f"shard_index {opts.shard_index} not in [0, {opts.shard_count})")
    return opts.shard_index, opts.shard_count


def make_packed_train_iterator(root, split: str, cfg: PipelineConfig = None, *, seed: int,
                               shard_options=None, global_batch_size: int, mesh=None,
                               sharding=None, model_mel: MelConfig | None = None,
                               verify: str = "size", speakers: list[str] | None = None):
    """Training batches from a packed split; the stream of `make_train_iterator` (above).

    `shard_options`: grain ShardOptions (shard_index = process index, shard_count =
    process count; drop_remainder gives every host the same number of records).
    `model_mel`: the model's mel config (default cfg.mel); a differing index is refused."""
    cfg = cfg or PipelineConfig()
    by_shards = cfg.host_split == "shards"
    entries, speakers, rep, inv, read = _open(root, split, cfg, model_mel, verify, speakers,
                                              shard_options, by_shards)
    index, count = _shard(shard_options)
    if not by_shards and shard_options is not None and shard_options.drop_remainder:
        entries = entries[:len(entries) // count * count]
    return train_batches(entries, speakers, rep, inv, cfg, read, seed=seed, process_index=index,
                         process_count=count, global_batch_size=global_batch_size, mesh=mesh,
                         sharding=sharding, presharded=by_shards)


def host_shards(info: dict, index: int, count: int) -> list[int]:
    """The shard files host `index` of `count` reads with host_split="shards": i % count ==
    index. Every host needs at least one (the split must have >= count shard files)."""
    n = len(info["shards"])
    if n < count:
        raise F.PackedError(f"host_split='shards': the split has {n} shard file(s), fewer "
                            f"than the {count} hosts; repack with a smaller "
                            f"--records-per-shard or use host_split='records'")
    return list(range(index, n, count))


def make_packed_eval_iterator(root, split: str, cfg: PipelineConfig = None, *,
                              shard_options=None, global_batch_size: int, mesh=None,
                              sharding=None, model_mel: MelConfig | None = None,
                              verify: str = "size", speakers: list[str] | None = None):
    """One deterministic padded pass over a packed split (as `make_eval_iterator`)."""
    cfg = dataclasses.replace(cfg or PipelineConfig(), shuffle=False, num_epochs=1)
    entries, speakers, rep, inv, read = _open(root, split, cfg, model_mel, verify, speakers)
    index, count = _shard(shard_options)
    return eval_batches(entries, speakers, rep, inv, cfg, read, process_index=index,
                        process_count=count, global_batch_size=global_batch_size, mesh=mesh,
                        sharding=sharding)


def make_packed_iterator(root, split: str, cfg: PipelineConfig = None, *, batch_size: int,
                         shard_index: int = 0, shard_count: int = 1, seed: int = 0,
                         model_mel: MelConfig | None = None, verify: str = "size"):
    """`pipeline.make_iterator` for a packed dataset: host-local batches of `batch_size`;
    splits named train* give the training stream, others the eval pass."""
    opts = grain.sharding.ShardOptions(shard_index, shard_count)
    kw = dict(shard_options=opts, global_batch_size=batch_size * shard_count,
              model_mel=model_mel, verify=verify)
    if split.startswith("train"):
        return make_packed_train_iterator(root, split, cfg, seed=seed, **kw)
    return make_packed_eval_iterator(root, split, cfg, **kw)


def verify_packed(root, splits=None) -> dict:
    """Full check: index hash, every shard's size and sha256, every record decodes and
    matches the catalog. Raises PackedError naming the shard and record; returns counts."""
    index = F.load_index(root)
    counts = {}
    for split in splits or sorted(index["splits"]):
        info = split_info(index, split, root)
        check_shards(root, info, "sha256")
        read = PackedReader(root, info, index["mel"]["hop_length"])
        cat = info["catalog"]
        for k, (uid, frames) in enumerate(zip(cat["id"], cat["frames"])):
            read.record(Entry(k, uid, "", 0, frames, None, None, key=k))
        counts[split] = len(cat["id"])
    return counts

