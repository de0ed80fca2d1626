"""Host-side audio loading, resampling (soxr VHQ) and atomic WAV writing. Never traced.

Every problem with the input raises `AudioError` (a ValueError) whose message names the
file (if any) and the problem: unreadable or corrupt file, empty audio, NaN/Inf samples,
wrong shape, bad sample rate. Samples beyond [-1, 1] are allowed (the official front end
only warns): one warning per process, nothing is clipped.
"""

from __future__ import annotations

import pathlib
import struct
import warnings

import numpy as np
import soundfile as sf
import soxr

from secoustic_jax.atomic import atomic_path

TARGET_SR = 22050
_warned_range = False


class AudioError(ValueError):
    """The audio is unusable; the message says why (and which file)."""


def _where(path) -> str:
    return f"{path}: " if path is not None else ""


def _warn_out_of_range(peak: float, path) -> None:
    """Warns once per process that samples exceed [-1, 1] (they are kept as they are)."""
    global _warned_range
    if not _warned_range:
        _warned_range = True
        warnings.warn(f"{_where(path)}audio peak {peak:.3f} exceeds [-1, 1]; not clipped "
                      "(further warnings of this kind are suppressed)", stacklevel=3)


def resample(wav: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Resamples mono float32 [N] from `sr` to `target_sr` with soxr VHQ.

    Output length is round(N * target_sr / sr) with halves rounded up (soxr's own rule,
    data.md §1). Returns the input unchanged when the rates agree.
    """
    if sr == target_sr:
        return wav
    out = soxr.resample(wav.astype(np.float32, copy=False), sr, target_sr, quality="VHQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def expected_length(num_samples: int, sr: int, target_sr: int = TARGET_SR) -> int:
    """N at `target_sr` for `num_samples` at `sr`: floor(n * target / sr + 1/2) (data.md §1)."""
    return (2 * int(num_samples) * target_sr + sr) // (2 * sr)


def prepare_waveform(wav, sr: int, target_sr: int | None = TARGET_SR, *,
                     path=None) -> np.ndarray:
    """In-memory audio -> float32 mono [N] at `target_sr` (None keeps `sr`).

    Args:
      wav: [N] mono or [N, C] channels-last (soundfile layout); any real dtype. Integer
        PCM is scaled to [-1, 1) by its type's range.
      sr: sample rate of `wav` in Hz (positive int).
      target_sr: output rate; resampled with soxr VHQ (up or down).
      path: only used in error messages.
    Raises:
      AudioError: wrong rank, empty, non-numeric, NaN/Inf samples, invalid rate.
    """
    arr = np.asarray(wav)
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"{_where(path)}invalid sample rate {sr!r} (need a positive integer)")
    if arr.ndim not in (1, 2):
        raise AudioError(f"{_where(path)}expected audio of shape [N] or [N, channels], "
                         f"got shape {arr.shape}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise AudioError(f"{_where(path)}empty audio (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{_where(path)}expected numeric samples, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)  # channels -> mono (model.md §2)
    finite = np.isfinite(arr)
    if not finite.all():
        n_bad = int((~finite).sum())
        raise AudioError(f"{_where(path)}audio contains {n_bad} NaN/Inf sample(s) "
                         f"(first at index {int(np.argmin(finite))})")
    peak = float(np.abs(arr).max())
    if peak > 1.0:
        _warn_out_of_range(peak, path)
    if target_sr is not None:
        arr = resample(arr, int(sr), int(target_sr))
    return np.ascontiguousarray(arr, dtype=np.float32)


def audio_info(path) -> tuple[int, int]:
    """(sample_rate, num_frames) of a file from its header. Raises AudioError if unreadable."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioError(f"{path}: unreadable audio file ({type(e).__name__}: {e})") from e
    return int(info.samplerate), int(info.frames)


def wav_declared_frames(path) -> int | None:
    """Frames the RIFF/WAVE header's data chunk declares (None: not a plain WAV, or a
    streamed header with an unknown size). libsndfile silently reads what is there."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), 1)


def load_audio(path, target_sr: int | None = TARGET_SR, *,
               strict: bool = False) -> tuple[np.ndarray, int]:
    """Reads any file soundfile can read -> (float32 mono [N] at `target_sr`, original_sr).

    Channels are averaged; resampling uses soxr VHQ (upsampling included). `target_sr=None`
    keeps the native rate. A WAV whose header declares more frames than the file holds (cut
    short mid-file) is read as far as it goes, with a warning naming both lengths;
    `strict=True` refuses it instead.
    Raises:
      AudioError: missing, unreadable or corrupt file, a directory, empty audio, NaN/Inf
        samples, a truncated WAV under `strict`.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{p}: unreadable or corrupt audio file ({type(e).__name__}: {e})") from e
    declared = wav_declared_frames(p)
    if declared is not None and declared > data.shape[0]:
        msg = (f"{p}: truncated WAV: the header declares {declared} frames, the file holds "
               f"{data.shape[0]}")
        if strict:
            raise AudioError(msg)
        warnings.warn(msg + "; using what is there", stacklevel=2)
    return prepare_waveform(data, int(sr), target_sr, path=p), int(sr)


def save_wav(path, wav, sr: int, subtype: str = "PCM_16") -> pathlib.Path:
    """Writes mono [N] (or [N, C]) audio atomically: temp file in the same folder, then rename.

    `subtype` is "PCM_16" (values beyond [-1, 1] are clipped by the format) or "FLOAT".
    Raises AudioError for bad shapes, NaN/Inf or an unknown subtype.
    """
    if subtype not in ("PCM_16", "FLOAT"):
        raise AudioError(f"save_wav: subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}")
    arr = np.asarray(wav)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise AudioError(f"save_wav: expected non-empty [N] or [N, C] audio, got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise AudioError(f"{path}: refusing to write audio with NaN/Inf samples")
    with atomic_path(path, suffix=".tmp.wav") as tmp:
        sf.write(tmp, arr, int(sr), subtype=subtype, format="WAV")
    return pathlib.Path(path)
