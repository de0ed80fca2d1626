"""grain input pipeline: manifests -> sharded, shuffled, aligned-crop batches (training.md §7).

    it = make_train_iterator(["corpus/train.jsonl"], inventory, PipelineConfig(), seed=0,
                             process_index=jax.process_index(),
                             process_count=jax.process_count(), global_batch_size=32,
                             mesh=mesh)
    batch = next(it)          # dict of [B, ...] arrays (global jax.Arrays with a mesh)
    state = it.get_state()    # bytes (JSON); it.set_state(state) resumes exactly
    it.stats()                # skipped items by kind (manifest and load time)

Stages: records (validated, filtered on manifest facts) -> this process's shard
`records[process_index::process_count]` -> grain MapDataset: shuffle (per-epoch reseeded)
-> repeat -> random_map(load mel + aligned crops, seeded per element) -> to_iter_dataset
(threads) [-> mp_prefetch(workers)] -> batching in this process, where failed items are
skipped and counted. Batch contract: docs/data.md.
"""

from __future__ import annotations

import dataclasses
import pathlib

import grain
import numpy as np
from absl import flags

from secoustic_jax.audio.io import AudioError
from secoustic_jax.audio.mel import frame_window
from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.data import report as R
from secoustic_jax.data.batching import BatchIterator, batch_sharding
from secoustic_jax.data.crops import make_example, plan_example, prompt_crop, prompt_window
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.manifest import audio_path, load_manifest, num_frames
from secoustic_jax.data.phones import PhoneInventory

SKIP = "_skip"


@dataclasses.dataclass(frozen=True)
class Entry:
    """What a worker needs for one utterance (small and picklable)."""

    index: int  # position in the global (all-host) entry list
    id: str
    audio: str
    speaker: int
    frames: int
    ids: tuple[int, ...] | None
    durations: tuple[int, ...] | None
    key: int = -1  # record key in a packed split (data/packed_source.py); -1 = manifest


def load_entries(manifest_paths, inventory: PhoneInventory, cfg: PipelineConfig,
                 speakers: list[str] | None = None
                 ) -> tuple[list[Entry], list[str], R.SkipReport]:
    """Manifests -> (entries, speaker names, report); drops bad lines and, unless
    `cfg.pad_short`, utterances shorter than a crop. Deterministic: every host agrees."""
    rep = R.SkipReport("manifest")
    records = []
    for path in [manifest_paths] if isinstance(manifest_paths, (str, pathlib.Path)) else manifest_paths:
        recs, _ = load_manifest(path, require_alignment=cfg.require_alignment,
                                inventory=inventory, report=rep)
        records.extend(recs)
    if speakers is None:
        speakers = sorted({r["speaker"] for r in records})
    spk = {s: i for i, s in enumerate(speakers)}
    out = []
    for r in records:
        frames = num_frames(r)
        if frames < cfg.segment_frames and not cfg.pad_short:
            rep.skip(r["id"], R.TOO_SHORT, f"{frames} frames < crop of {cfg.segment_frames}")
            continue
        if r["speaker"] not in spk:
            rep.skip(r["id"], R.BAD_RECORD, f"speaker {r['speaker']!r} not in the speaker list")
            continue
        ids = tuple(inventory.encode(r["phones"])) if r.get("phones") else None
        durs = tuple(r["durations"]) if r.get("phones") else None
        out.append(Entry(len(out), r["id"], str(audio_path(r)), spk[r["speaker"]], frames, ids,
                         durs))
    return out, speakers, rep


class EntrySource:
    """grain random-access source over a list of Entry (len + getitem)."""

    def __init__(self, entries: list[Entry]):
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Entry:
        return self._entries[index]


def prompt_pool(entries: list[Entry]) -> dict[int, tuple[Entry, ...]]:
    """speaker -> that speaker's entries (all hosts'), for prompts from another utterance.

    Raises naming the speakers that have a single utterance: their prompt could only be
    the target utterance itself, which is what this option exists to avoid.
    """
    pool: dict[int, list[Entry]] = {}
    for e in entries:
        pool.setdefault(e.speaker, []).append(e)
    lonely = sorted(pool[s][0].id for s in pool if len(pool[s]) < 2)
    if lonely:
        raise ValueError(f"prompt_source='other' needs >= 2 utterances per speaker; "
                         f"{len(lonely)} speaker(s) have one (e.g. {lonely[:3]})")
    return {s: tuple(v) for s, v in pool.items()}


def other_entry(entry: Entry, pool: dict[int, tuple[Entry, ...]], rng) -> Entry:
    """Another utterance of entry's speaker: uniform with rng, else the next one in order."""
    same = pool[entry.speaker]
    pos = next(i for i, e in enumerate(same) if e.index == entry.index)
    if rng is None:
        return same[(pos + 1) % len(same)]
    j = int(rng.integers(len(same) - 1))
    return same[j + (j >= pos)]


class ManifestReader:
    """entry -> ((mel [T, 80] f32, phone IDs [P] | None, durations [P] | None), None) or
    (None, skip tuple): the mel from the audio file, the labels from the manifest entry.
    Picklable (grain workers); the packed source has a reader of the same protocol."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def __call__(self, entry: Entry):
        mel, skip = _read_mel(entry, self.cfg)
        if skip:
            return None, skip
        ids = None if entry.ids is None else np.asarray(entry.ids, np.int32)
        durs = None if entry.durations is None else np.asarray(entry.durations, np.int64)
        return (mel, ids, durs), None

    def mel(self, entry: Entry):
        """Only the mel (prompt of another utterance): (mel, None) or (None, skip)."""
        return _read_mel(entry, self.cfg)


def _read_mel(entry: Entry, cfg: PipelineConfig):
    """-> (full-utterance mel, None) or (None, skip tuple)."""
    try:
        mel = utterance_mel(entry.audio, cfg.mel, cfg.feature_cache)
    except AudioError as e:
        msg = str(e)
        kind = R.NAN_AUDIO if "NaN" in msg else R.EMPTY_AUDIO if "empty" in msg else R.UNREADABLE_AUDIO
        return None, (entry.id, kind, msg)
    except ValueError as e:  # shorter than the front end accepts
        return None, (entry.id, R.TOO_SHORT, str(e))
    if mel.shape[0] != entry.frames:
        return None, (entry.id, R.LENGTH_MISMATCH, f"audio gives {mel.shape[0]} frames, manifest "
                                                   f"says {entry.frames}")
    return mel, None


def load_example(entry: Entry | None, cfg: PipelineConfig, rng, pool=None, read=None) -> dict:
    """Entry -> example dict, or {SKIP: (id, kind, reason)}; never raises for bad data.

    With `pool` (prompt_source "other"), the prompt is cropped from another utterance of
    the same speaker; `prompt_utt_index` records which. `read` (default ManifestReader)
    gives the utterance's mel and labels.
    """
    if entry is None:  # padding item of an eval shard
        return {SKIP: ("<pad>", "padding", "")}
    read = read or ManifestReader(cfg)
    utt, skip = read(entry)
    if skip:
        return {SKIP: skip}
    feats, ids, durs = utt  # the full-utterance mel [T, 80], or int16 waveform [N22]
    try:
        ex = _crop(feats, entry.frames, ids, durs, cfg, rng)
    except ValueError as e:
        return {SKIP: (entry.id, getattr(e, "kind", R.BAD_ALIGNMENT), str(e))}
    ex["prompt_utt_index"] = np.int32(entry.index)
    if pool is not None:
        other = other_entry(entry, pool, rng)
        other_feats, skip = read.mel(other)
        if skip:  # the item is skipped and counted under the prompt utterance's id
            return {SKIP: skip}
        plen = _prompt_of(other_feats, other.frames, cfg, rng, ex)
        ex["prompt_lengths"] = np.int32(plen)
        ex["prompt_utt_index"] = np.int32(other.index)
    ex["speaker"] = np.int32(entry.speaker)
    ex["utt_index"] = np.int32(entry.index)
    ex["valid"] = np.int32(1)
    return ex


def _crop(feats: np.ndarray, frames: int, ids, durs, cfg: PipelineConfig, rng) -> dict:
    """make_example on the mel; with features="waveform", the same windows (same rng
    draws) cut from the waveform as `wav` / `prompt_wav` (frame_window), no mel."""
    kw = dict(segment=cfg.segment_frames, hop=cfg.token_hop, multiple=cfg.crop_multiple,
              prompt_frames=cfg.prompt_frames, max_phones=cfg.max_phones,
              pad_short=cfg.pad_short, rng=rng)
    if cfg.features == "mel":
        return make_example(feats, ids, durs, **kw)
    ex, (start, _), (pstart, _) = plan_example(frames, ids, durs, **kw)
    ex["wav"] = frame_window(feats, start, cfg.segment_frames, cfg.mel)
    ex["prompt_wav"] = frame_window(feats, pstart, cfg.prompt_frames, cfg.mel)
    return ex


def _prompt_of(feats: np.ndarray, frames: int, cfg: PipelineConfig, rng, ex: dict) -> int:
    """Puts a prompt window of another utterance's mel (or waveform) into `ex` as
    `prompt_mel` (or `prompt_wav`), the same draw either way; returns its valid frames."""
    if cfg.features == "waveform":
        pstart, plen = prompt_window(frames, cfg.prompt_frames, rng)
        ex["prompt_wav"] = frame_window(feats, pstart, cfg.prompt_frames, cfg.mel)
    else:
        ex["prompt_mel"], plen = prompt_crop(feats, cfg.prompt_frames, rng)
    return plen


class TrainTransform(grain.transforms.RandomMap):
    """grain RandomMap: seeded per element (and per epoch through the index)."""

    def __init__(self, cfg: PipelineConfig, pool=None, read=None):
        self.cfg, self.pool, self.read = cfg, pool, read

    def random_map(self, entry, rng):
        return load_example(entry, self.cfg, rng, self.pool, self.read)


class EvalTransform(grain.transforms.Map):
    """grain Map: deterministic centred crops (and the next same-speaker prompt)."""

    def __init__(self, cfg: PipelineConfig, pool=None, read=None):
        self.cfg, self.pool, self.read = cfg, pool, read

    def map(self, entry):
        return load_example(entry, self.cfg, None, self.pool, self.read)


def _pool(cfg: PipelineConfig, entries: list[Entry]):
    return prompt_pool(entries) if cfg.prompt_source == "other" else None


def _local_batch(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                         f"process_count={process_count}")
    return global_batch_size // process_count


def _resolve_sharding(mesh, sharding, cfg: PipelineConfig):
    if sharding is not None:
        return sharding
    return batch_sharding(mesh, cfg.batch_axes) if mesh is not None else None


def _read_options(cfg: PipelineConfig):
    return grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch_buffer)


def _to_iter(ds, cfg: PipelineConfig):
    it_ds = ds.to_iter_dataset(_read_options(cfg))
    if cfg.worker_count > 0:
        # grain#1355: mp workers read absl flags (environment.md §5)
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
    return it_ds


def make_train_iterator(manifest_paths, inventory: PhoneInventory, cfg: PipelineConfig = None,
                        *, seed: int, process_index: int = 0, process_count: int = 1,
                        global_batch_size: int, mesh=None, sharding=None,
                        speakers: list[str] | None = None):
    """Shuffled, repeated, randomly cropped training batches (see docs/data.md for keys).

    Every process reads the disjoint shard `entries[process_index::process_count]`;
    shuffling is seeded and different in every epoch; crops and prompts are seeded per
    element, so a restored `get_state()` reproduces the following batches exactly.
    """
    cfg = cfg or PipelineConfig()
    cfg.validate()
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    _manifest_settings(cfg)
    entries, speakers, rep = load_entries(manifest_paths, inventory, cfg, speakers)
    return train_batches(entries, speakers, rep, inventory, cfg, ManifestReader(cfg), seed=seed,
                         process_index=process_index, process_count=process_count,
                         global_batch_size=global_batch_size, mesh=mesh, sharding=sharding)


def train_batches(entries: list[Entry], speakers: list[str], rep: R.SkipReport,
                  inventory: PhoneInventory, cfg: PipelineConfig, read, *, seed: int,
                  process_index: int, process_count: int, global_batch_size: int, mesh=None,
                  sharding=None, presharded: bool = False) -> BatchIterator:
    """The training stream over an entry list (shared by the manifest and packed sources):
    shard `entries[process_index::process_count]` -> shuffle -> repeat -> random_map.

    `presharded`: `entries` already are this host's (packed host_split="shards"); they are
    used whole, and prompts from another utterance come from them only."""
    local = _local_batch(global_batch_size, process_count)
    shard = entries if presharded else entries[process_index::process_count]
    if not shard:
        raise ValueError(f"process {process_index}/{process_count} has no usable utterances "
                         f"({rep.skipped} skipped):\n{rep.summary()}")
    ds = grain.MapDataset.source(EntrySource(shard))
    if cfg.shuffle:
        ds = ds.shuffle(seed=seed % 2**32)
    ds = ds.repeat(cfg.num_epochs)
    ds = ds.random_map(TrainTransform(cfg, _pool(cfg, entries), read), seed=(seed + 1) % 2**32)
    return BatchIterator(lambda: iter(_to_iter(ds, cfg)), local,
                         sharding=_resolve_sharding(mesh, sharding, cfg),
                         global_batch=global_batch_size, manifest_report=rep,
                         speakers=speakers, num_examples=len(shard), inventory=inventory)


def _manifest_settings(cfg: PipelineConfig) -> None:
    """Refuses the settings only a packed source has."""
    if cfg.host_split != "records":
        raise ValueError(f"pipeline.host_split={cfg.host_split!r} needs a packed source "
                         f"(data.kind=packed); a manifest has no shard files to divide")
    if cfg.features != "mel":
        raise ValueError(f"pipeline.features={cfg.features!r} needs a packed source with "
                         f"waveforms (secoustic data pack --waveform, data.kind=packed)")


def make_eval_iterator(manifest_paths, inventory: PhoneInventory, cfg: PipelineConfig = None,
                       *, process_index: int = 0, process_count: int = 1,
                       global_batch_size: int, mesh=None, sharding=None,
                       speakers: list[str] | None = None):
    """One deterministic pass (no shuffle, centred crops and prompts).

    Every process yields the same number of batches: shards are padded to equal length and
    the last batch is filled with `valid` = 0 examples; a bad item also becomes `valid` = 0
    padding (and is counted), so hosts never disagree on the batch count.
    """
    cfg = dataclasses.replace(cfg or PipelineConfig(), shuffle=False, num_epochs=1)
    cfg.validate()
    _manifest_settings(cfg)
    entries, speakers, rep = load_entries(manifest_paths, inventory, cfg, speakers)
    return eval_batches(entries, speakers, rep, inventory, cfg, ManifestReader(cfg),
                        process_index=process_index, process_count=process_count,
                        global_batch_size=global_batch_size, mesh=mesh, sharding=sharding)


def eval_batches(entries: list[Entry], speakers: list[str], rep: R.SkipReport,
                 inventory: PhoneInventory, cfg: PipelineConfig, read, *, process_index: int,
                 process_count: int, global_batch_size: int, mesh=None,
                 sharding=None) -> BatchIterator:
    """One padded deterministic pass over an entry list (manifest and packed sources)."""
    local = _local_batch(global_batch_size, process_count)
    if not entries:
        raise ValueError(f"no usable utterances for evaluation:\n{rep.summary()}")
    per_host = -(-len(entries) // process_count)
    shard = entries[process_index::process_count]
    shard = shard + [None] * (per_host - len(shard))
    template = _template(cfg)
    ds = grain.MapDataset.source(EntrySource(shard)).map(
        EvalTransform(cfg, _pool(cfg, entries), read))
    return BatchIterator(lambda: iter(_to_iter(ds, cfg)), local,
                         sharding=_resolve_sharding(mesh, sharding, cfg),
                         global_batch=global_batch_size, manifest_report=rep, pad_final=True,
                         template=template, speakers=speakers, num_examples=per_host,
                         inventory=inventory)


def _template(cfg: PipelineConfig) -> dict:
    """Zero example with the batch shapes/dtypes (eval padding)."""
    frames = max(cfg.segment_frames, cfg.prompt_frames)
    feats = (np.zeros((frames, cfg.mel.n_mels), np.float32) if cfg.features == "mel"
             else np.zeros(frames * cfg.mel.hop_length, np.int16))
    ex = _crop(feats, frames, np.ones(1, np.int32), np.array([frames]),
               dataclasses.replace(cfg, pad_short=True), None)
    ex.update(speaker=np.int32(0), utt_index=np.int32(-1), prompt_utt_index=np.int32(-1),
              valid=np.int32(0))
    return ex


def make_iterator(root, split: str, cfg: PipelineConfig = None, *, batch_size: int,
                  shard_index: int = 0, shard_count: int = 1, seed: int = 0):
    """Corpus-folder convenience: `<root>/<split>.jsonl` with `<root>/phones.json`.

    `batch_size` is the per-process batch (host-local numpy batches, no mesh). Splits whose
    name starts with "train" give the training iterator; others the deterministic eval one.
    """
    root = pathlib.Path(root)
    inv = PhoneInventory.load(root)
    paths = [root / f"{split}.jsonl"]
    if split.startswith("train"):
        return make_train_iterator(paths, inv, cfg, seed=seed, process_index=shard_index,
                                   process_count=shard_count,
                                   global_batch_size=batch_size * shard_count)
    return make_eval_iterator(paths, inv, cfg, process_index=shard_index,
                              process_count=shard_count, global_batch_size=batch_size * shard_count)
