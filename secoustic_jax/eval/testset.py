"""Test sets for the evaluator: utterances loaded per evaluation.md §2.1.

A `TestSet` is a name (E1, E2, ...) and a list of `Utterance`s. Each utterance holds the
22.05 kHz codec input and the 16 kHz metric reference: for a 16 kHz source the reference
is the decoded original itself, not a round trip through 22.05 kHz (§2.4). Loading
averages channels to mono and resamples with soxr VHQ; loudness is not normalised, but
an utterance with |x| > 1 is scaled down to peak 1 and the factor is recorded (§2.1).

Sources: a manifest (data.md §1; audio relative to the manifest's folder) or a folder of
audio files (no transcripts, so no WER; the speaker is the parent folder's name).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from secoustic_jax.audio.io import AudioError, load_audio, resample
from secoustic_jax.data.manifest import audio_path, load_manifest
from secoustic_jax.eval.metrics import EVAL_SR

CODEC_SR = 22050
MIN_SAMPLES_22K = 385 + 255  # the front end needs N > 384; at least one full mel frame
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclasses.dataclass
class Utterance:
    """One test item. wav: [N] float32 at 22.05 kHz; ref16: [N16] float32 at 16 kHz."""

    utt_id: str
    wav: np.ndarray
    ref16: np.ndarray
    text: str | None = None
    speaker: str | None = None  # namespaced voice / speaker id
    group: str | None = None  # speaker identity (shared-speaker voices merged), for VC/probe
    source_sr: int = CODEC_SR
    wer_usable: bool = True
    scale: float | None = None  # factor applied when |x| > 1

    @property
    def num_samples(self) -> int:
        return int(self.wav.shape[0])

    @property
    def duration(self) -> float:
        return self.num_samples / CODEC_SR


@dataclasses.dataclass
class TestSet:
    """A named list of utterances plus what was skipped while loading (id, reason)."""

    name: str
    utterances: list[Utterance]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def multi_speaker(self) -> bool:
        return len({u.group for u in self.utterances if u.group}) >= 2


def load_utterance(path, utt_id: str, **fields) -> Utterance:
    """Reads one file -> Utterance (mono, soxr VHQ to 22.05 kHz and to 16 kHz).

    Raises AudioError for unreadable, empty, NaN or too-short audio.
    """
    native, sr = load_audio(path, target_sr=None)
    scale = None
    peak = float(np.abs(native).max())
    if peak > 1.0:  # §2.1: scale down and record, never clip
        scale = 1.0 / peak
        native = native * np.float32(scale)
    wav = resample(native, sr, CODEC_SR)
    if wav.shape[0] < MIN_SAMPLES_22K:
        raise AudioError(f"{path}: {wav.shape[0]} samples at 22.05 kHz; the codec needs at "
                         f"least {MIN_SAMPLES_22K} (one mel frame plus the front end's padding)")
    ref16 = native if sr == EVAL_SR else resample(native, sr, EVAL_SR)
    return Utterance(utt_id, np.ascontiguousarray(wav, np.float32),
                     np.ascontiguousarray(ref16, np.float32), source_sr=sr, scale=scale, **fields)


def _group_of(rec: dict) -> str:
    extra = rec.get("extra") or {}
    group = extra.get("speaker_group")
    if group:
        return f"{rec['corpus']}:{group}" if ":" not in group else group
    return rec["speaker"]


def from_manifest(path, name: str | None = None, *, limit: int | None = None,
                  split: str | None = None, min_seconds: float = 0.0,
                  per_speaker: int | None = None) -> TestSet:
    """Loads a manifest's records (in file order) as a TestSet.

    `split` keeps only records of that split; `min_seconds` drops shorter utterances
    (counted as skipped); `per_speaker` keeps the first N of each speaker; `limit` keeps
    the first N kept utterances.
    """
    path = pathlib.Path(path)
    records, rep = load_manifest(path)
    skipped = [(s.item, f"{s.kind}: {s.reason}") for s in rep.items]
    utts: list[Utterance] = []
    for rec in records:
        if split is not None and rec["split"] != split:
            continue
        if rec["duration"] < min_seconds:
            skipped.append((rec["id"], f"shorter than {min_seconds} s"))
            continue
        if limit is not None and len(utts) >= limit:
            break
        if per_speaker is not None and sum(u.speaker == rec["speaker"] for u in utts) >= per_speaker:
            continue
        extra = rec.get("extra") or {}
        try:
            utts.append(load_utterance(audio_path(rec), rec["id"], text=rec["text"],
                                       speaker=rec["speaker"], group=_group_of(rec),
                                       wer_usable=bool(extra.get("wer_usable", True))))
        except AudioError as e:
            skipped.append((rec["id"], str(e)))
    if not utts:
        raise ValueError(f"test set {path}: no usable utterances (split={split!r}, "
                         f"min_seconds={min_seconds}, {len(skipped)} skipped)")
    return TestSet(name or path.stem, utts, skipped, str(path))


def from_audio_dir(directory, name: str | None = None, *, limit: int | None = None) -> TestSet:
    """Every audio file under `directory` (sorted, recursive); no transcripts.

    The speaker is the file's parent folder relative to `directory` ("" at the top).
    """
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
    utts, skipped = [], []
    for f in files[:limit]:
        rel = f.relative_to(root)
        spk = rel.parent.as_posix() if rel.parent.as_posix() != "." else None
        try:
            utts.append(load_utterance(f, rel.with_suffix("").as_posix(), speaker=spk, group=spk,
                                       wer_usable=False))
        except AudioError as e:
            skipped.append((rel.as_posix(), str(e)))
    if not utts:
        raise ValueError(f"no readable audio under {root} ({len(skipped)} unreadable)")
    return TestSet(name or root.name, utts, skipped, str(root))
