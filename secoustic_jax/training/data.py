"""Batch sources for the trainer: the grain pipeline (manifest or packed), or a synthetic source.

Both yield host-local dict batches (numpy) with the keys of `BATCH_KEYS` and expose
`get_state() -> bytes` / `set_state(bytes)` so the checkpoint can store the position, plus
`inventory` (the phone inventory whose size fixes the phoneme embedding).

The synthetic source is deterministic in (seed, process index, batch position): every
phone ID has a fixed mel template, frames are the template of the phone under them plus
a speaker offset and noise. That is learnable (mel reconstruction, phone contrast), so it
serves tests and benchmarks with exactly the batch contract of the real pipeline.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from secoustic_jax.config.train import ExperimentConfig
from secoustic_jax.data import packed_source as ps
from secoustic_jax.data import pipeline as pl

BATCH_KEYS = ("mel", "mel_mask", "phones", "phone_durations", "frame_phones", "token_phones",
              "prompt_mel", "prompt_lengths", "speaker")


def regulator_index_np(durations: np.ndarray, hop: int, num_frames: int):
    """numpy reference of model.phonemes.regulator_index (float arithmetic, per utterance)."""
    b, _ = durations.shape
    index = np.zeros((b, num_frames), np.int32)
    valid = np.zeros((b, num_frames), bool)
    for i in range(b):
        d = durations[i].astype(np.int64)
        ends = np.cumsum(d)
        total = int(ends[-1])
        n_real = int(np.max(np.nonzero(d)[0]) + 1) if total else 0
        if hop > 1:
            n_tok = int(np.ceil(total / hop))
            bounds = np.floor(ends / hop + 0.5).astype(np.int64)
            bounds[max(n_real - 1, 0):] = n_tok
            ends, total = np.minimum(bounds, n_tok), n_tok
        for t in range(min(total, num_frames)):
            index[i, t] = min(int(np.sum(ends <= t)), d.shape[0] - 1)
            valid[i, t] = True
    return index, valid


class SyntheticSource:
    """Endless synthetic batches of `batch` utterances of `frames` mel frames."""

    def __init__(self, config: ExperimentConfig, batch: int, frames: int, *, split: str = "train",
                 process_index: int = 0, vocab: int | None = None):
        self.batch, self.frames = batch, frames
        self.vocab = vocab or config.data.synthetic_vocab
        self.max_phones = config.data.pipeline.max_phones
        self.prompt_frames = config.codec.paralinguistic.prompt_frames
        self.seed = (config.seed, {"train": 0, "valid": 1}.get(split, 2), process_index)
        table_rng = np.random.default_rng(1234 + config.data.synthetic_vocab)
        self.templates = table_rng.normal(-4.0, 1.5, (self.vocab, 80)).astype(np.float32)
        self.speakers = table_rng.normal(0.0, 0.5, (8, 80)).astype(np.float32)
        self.position = 0
        self.nan_batches = set(config.data.synthetic_nan_batches) if split == "train" else set()
        self.inventory_labels = ("<pad>", "SIL", "SPN", "WB") + tuple(
            f"syn:{i}" for i in range(4, self.vocab))

    # ---- iterator protocol + state ------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = np.random.default_rng(self.seed + (self.position,))
        self.position += 1
        batch = self._batch(rng)
        if self.position - 1 in self.nan_batches:
            batch["mel"][0, 0, 0] = np.nan  # one poisoned value is enough
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"position": self.position}).encode()

    def set_state(self, state: bytes) -> None:
        self.position = int(json.loads(bytes(state).decode())["position"])

    # ---- generation ---------------------------------------------------------------------
    def _utterance(self, rng, n: int, speaker: int):
        """Phones, durations (summing to n) and the mel [n, 80] of one utterance."""
        durs = []
        while sum(durs) < n:
            durs.append(int(rng.integers(2, 10)))
        durs[-1] -= sum(durs) - n
        durs = [d for d in durs if d > 0][: self.max_phones]
        durs[-1] += n - sum(durs)
        phones = rng.integers(1, self.vocab, len(durs))
        frame_ph = np.repeat(phones, durs)
        mel = self.templates[frame_ph] + self.speakers[speaker] + 0.3 * rng.normal(
            size=(n, 80)).astype(np.float32)
        return phones, np.asarray(durs), frame_ph, mel.astype(np.float32)

    def _batch(self, rng) -> dict:
        b, n, p = self.batch, self.frames, self.max_phones
        out = {"mel": np.zeros((b, n, 80), np.float32), "mel_mask": np.zeros((b, n), np.float32),
               "phones": np.zeros((b, p), np.int32), "phone_durations": np.zeros((b, p), np.int32),
               "frame_phones": np.zeros((b, n), np.int32),
               "prompt_mel": np.zeros((b, self.prompt_frames, 80), np.float32),
               "prompt_lengths": np.full((b,), self.prompt_frames, np.int32),
               "speaker": rng.integers(0, 8, b).astype(np.int32)}
        for i in range(b):
            # Some utterances are shorter than the crop (multiple of 4, as the pipeline pads).
            length = n if rng.random() < 0.75 else int(rng.integers(n // 8, n // 4)) * 4
            ph, du, fp, mel = self._utterance(rng, length, out["speaker"][i])
            out["mel"][i, :length], out["mel_mask"][i, :length] = mel, 1.0
            out["phones"][i, :len(ph)], out["phone_durations"][i, :len(du)] = ph, du
            out["frame_phones"][i, :length] = fp
            _, _, _, pmel = self._utterance(rng, self.prompt_frames, out["speaker"][i])
            out["prompt_mel"][i] = pmel
        idx, valid = regulator_index_np(out["phone_durations"], 4, n // 4)
        out["token_phones"] = np.where(valid, np.take_along_axis(out["phones"], idx, 1), 0).astype(np.int32)
        return out


def make_source(config: ExperimentConfig, stage_index: int, *, split: str, process_index: int,
                process_count: int, batch: int | None = None):
    """Host-local batch iterator for one stage: global batch / process_count utterances."""
    stage = config.stages[stage_index]
    global_batch = batch or stage.batch_size
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} does not split over {process_count} hosts")
    local = global_batch // process_count
    if config.data.kind == "synthetic":
        return SyntheticSource(config, local, stage.segment_frames, split=split,
                               process_index=process_index)
    return _manifest_source(config, stage, split, local, process_index, process_count)


def _stage_pipeline(config, stage, split):
    return dataclasses.replace(config.data.pipeline, segment_frames=stage.segment_frames,
                               shuffle=split == config.data.train_split,
                               num_epochs=None if split == config.data.train_split else 1)


def _manifest_source(config, stage, split, local_batch, process_index, process_count):
    """The grain pipeline of secoustic_jax.data.pipeline, per-host shard; with
    data.kind "packed", the same stream read from the packed shards (data/packed_source.py),
    whose mel config must equal the model's (config.codec.mel)."""
    pcfg = _stage_pipeline(config, stage, split)
    if config.data.kind == "packed":
        return ps.make_packed_iterator(config.data.packed, split, pcfg, batch_size=local_batch,
                                       shard_index=process_index, shard_count=process_count,
                                       seed=config.seed, model_mel=config.codec.mel,
                                       verify=config.data.packed_verify)
    return pl.make_iterator(config.data.root, split, pcfg, batch_size=local_batch,
                            shard_index=process_index, shard_count=process_count,
                            seed=config.seed)
