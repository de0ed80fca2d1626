"""The packed dataset format (docs/data.md §8): msgpack records in ArrayRecord shards + index.

A packed dataset is a folder (local, `file://` or any `etils.epath` URL such as `gs://`):

    index.json                               # written last; see `build_index`
    <split>-00000-of-00004.arrayrecord       # ArrayRecord, one msgpack record per utterance
    <split>-00000-of-00004.arrayrecord.done.json   # per-shard sidecar (plan hash, sha256, catalog)

A record (format `RECORD_FORMAT`) is a msgpack map with the keys
  v (int, RECORD_VERSION), id, speaker, split (str), frames (T), n_mels,
  mel_dtype ("float16" | "float32"), mel (bytes: little-endian [T, n_mels] C order),
  phones (bytes: little-endian int32 [P] inventory IDs; empty when unaligned),
  durations (bytes: little-endian int32 [P] mel frames, sum T; empty when unaligned),
  wav_samples (int, 0 without waveform), wav (bytes: little-endian int16 [N22] at 22.05 kHz).
No pickle: msgpack holds only ints, strings and byte strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import msgpack
import numpy as np
from etils import epath

from secoustic_jax.config.model import MelConfig

FORMAT = "secoustic-packed"
VERSION = 1
RECORD_FORMAT = "msgpack-v1"
RECORD_VERSION = 1
INDEX_NAME = "index.json"
SHARD_SUFFIX = ".arrayrecord"
DONE_SUFFIX = ".done.json"
WRITER_OPTIONS = "group_size:1"  # grain random access wants group size 1
MEL_DTYPES = ("float16", "float32")
# |x - float16(x)| <= 2^-11 |x| (round to nearest, 10 stored mantissa bits); log-mels lie in
# (-16, 16), so the bound is 2^-8 (measured maximum on the tiny corpus: exactly 2^-8).
FLOAT16_BOUND = 2.0 ** -8


class PackedError(ValueError):
    """A packed dataset is unusable; the message names the index, shard and record."""


def as_path(url) -> epath.Path:
    """str / PathLike / `file://` URL -> epath.Path (`gs://` and other URLs pass through).

    etils.epath registers gs://, s3://, az:// and hf:// but not file://, which is mapped to
    the local path here."""
    s = str(url)
    if s.startswith("file://"):
        s = s[len("file://"):]
    return epath.Path(s)


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def mel_dict(cfg: MelConfig) -> dict:
    return dataclasses.asdict(cfg)


def mel_mismatch(stored: dict, cfg: MelConfig) -> list[str]:
    """Fields where the index's mel config differs from `cfg`: ["n_mels: 80 != 64", ...]."""
    want = mel_dict(cfg)
    keys = sorted(set(stored) | set(want))
    return [f"{k}: packed {stored.get(k)!r} != model {want.get(k)!r}" for k in keys
            if stored.get(k) != want.get(k)]


def encode_record(*, id: str, speaker: str, split: str, mel: np.ndarray, mel_dtype: str,
                  phones: np.ndarray | None, durations: np.ndarray | None,
                  wav: np.ndarray | None = None) -> bytes:
    """One utterance -> msgpack bytes. mel [T, n_mels] float32; phones/durations [P] ints;
    wav [N22] int16 or None. Deterministic: same inputs -> same bytes."""
    mel = np.asarray(mel)
    rec = {"v": RECORD_VERSION, "id": id, "speaker": speaker, "split": split,
           "frames": int(mel.shape[0]), "n_mels": int(mel.shape[1]), "mel_dtype": mel_dtype,
           "mel": np.ascontiguousarray(mel, np.dtype(mel_dtype).newbyteorder("<")).tobytes(),
           "phones": b"" if phones is None else np.asarray(phones, "<i4").tobytes(),
           "durations": b"" if durations is None else np.asarray(durations, "<i4").tobytes(),
           "wav_samples": 0 if wav is None else int(len(wav)),
           "wav": b"" if wav is None else np.asarray(wav, "<i2").tobytes()}
    return msgpack.packb(rec, use_bin_type=True)


def decode_record(data: bytes, where: str, hop: int = 256) -> dict:
    """msgpack bytes -> dict with numpy arrays: mel [T, n_mels] float32, phones / durations
    int32 [P] (None when unaligned), wav int16 [N] or None. Raises PackedError naming `where`
    (shard and record) for anything that does not decode or is inconsistent."""
    try:
        rec = msgpack.unpackb(data, raw=False)
        if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION:
            raise ValueError(f"not a v{RECORD_VERSION} record")
        t, m, dt = int(rec["frames"]), int(rec["n_mels"]), rec["mel_dtype"]
        if dt not in MEL_DTYPES:
            raise ValueError(f"mel_dtype {dt!r} not in {MEL_DTYPES}")
        mel = np.frombuffer(rec["mel"], np.dtype(dt).newbyteorder("<")).reshape(t, m)
        out = dict(rec, mel=mel.astype(np.float32))
        aligned = bool(rec["phones"])
        out["phones"] = np.frombuffer(rec["phones"], "<i4").astype(np.int32) if aligned else None
        out["durations"] = (np.frombuffer(rec["durations"], "<i4").astype(np.int32)
                            if aligned else None)
        out["wav"] = (np.frombuffer(rec["wav"], "<i2").astype(np.int16)
                      if rec["wav_samples"] else None)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise PackedError(f"{where}: record does not decode ({type(e).__name__}: {e})") from e
    problems = record_problems(out["mel"], out["phones"], out["durations"], out["wav"], hop)
    if problems:
        raise PackedError(f"{where} ({rec.get('id')}): " + "; ".join(problems))
    return out


def record_problems(mel: np.ndarray, phones, durations, wav, hop: int) -> list[str]:
    """Every inconsistency of one record (empty = good): finite mel, labels covering the
    frames (sum durations == T), matching phone/duration lengths, T == floor(N22 / hop)."""
    out = []
    if mel.ndim != 2 or mel.shape[0] == 0:
        return [f"mel shape {mel.shape} is not [T > 0, n_mels]"]
    if not np.isfinite(mel).all():
        out.append(f"mel has {int((~np.isfinite(mel)).sum())} non-finite values")
    if (phones is None) != (durations is None):
        out.append("phones and durations must appear together")
    elif phones is not None:
        if len(phones) != len(durations) or len(phones) == 0:
            out.append(f"{len(phones)} phones but {len(durations)} durations")
        elif (np.asarray(durations) < 0).any() or int(np.sum(durations)) != mel.shape[0]:
            out.append(f"durations sum to {int(np.sum(durations))}, not the {mel.shape[0]} "
                       f"frames (negative: {int((np.asarray(durations) < 0).sum())})")
    if wav is not None and len(wav) // hop != mel.shape[0]:
        out.append(f"waveform of {len(wav)} samples gives {len(wav) // hop} frames, "
                   f"mel has {mel.shape[0]}")
    return out


def canonical(obj) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(index: dict) -> str:
    """sha256 over the canonical JSON of the index without its `content_hash` field."""
    return hashlib.sha256(canonical({k: v for k, v in index.items()
                                     if k != "content_hash"})).hexdigest()


def file_sha256(path: epath.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_index(root) -> dict:
    """Reads `<root>/index.json`, checks format, version and content hash; raises naming
    the file and the problem."""
    path = as_path(root) / INDEX_NAME
    if not path.exists():
        raise PackedError(f"{path}: no packed index (run `secoustic data pack`)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PackedError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from e
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise PackedError(f"{path}: format {index.get('format')!r} v{index.get('version')} is "
                          f"not {FORMAT} v{VERSION}")
    got = content_hash(index)
    if index.get("content_hash") != got:
        raise PackedError(f"{path}: content hash mismatch (stored {index.get('content_hash')}, "
                          f"computed {got}); the index was edited or damaged")
    return index
