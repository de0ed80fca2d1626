"""Alignments -> per-phone durations in mel frames (data.md §2), and the 21.5 Hz reduction.

All functions return integer durations that sum **exactly** to the frame count T of the
audio (T = floor(N22 / 256), N22 = the 22.05 kHz length). Boundaries are rounded
cumulatively, so the total never drifts.
"""

from __future__ import annotations

import numpy as np

from secoustic_jax.audio.io import expected_length
from secoustic_jax.data.phones import SIL

SR = 22050
HOP = 256


class AlignmentError(ValueError):
    """An alignment cannot be converted (empty, non-monotonic, wrong lengths)."""


def frames_for(num_samples: int, sample_rate: int) -> int:
    """T, the mel frames of a file with `num_samples` at `sample_rate` after resampling."""
    return expected_length(num_samples, sample_rate, SR) // HOP


def seconds_to_boundary(t: float) -> int:
    """Frame boundary of time t (s): floor(t * 22050 / 256 + 1/2)."""
    return int(np.floor(float(t) * SR / HOP + 0.5))


def durations_from_ends(phones: list[str], ends: list[float], total_frames: int,
                        start: float = 0.0) -> tuple[list[str], list[int]]:
    """Phone end times (s) -> (phones, durations) with sum(durations) == total_frames.

    Args:
      phones: normalised labels (SIL marks silence), length n >= 1.
      ends: end time of each phone in seconds, non-decreasing, length n.
      total_frames: T of the audio.
      start: start time of the first phone; a SIL is prepended when it rounds past 0.
    Mismatch rules (data.md §2): an alignment ending early extends a final SIL or appends
    SIL; one ending late is clipped to T; boundaries are clipped to [0, T], non-decreasing.
    """
    if len(phones) != len(ends) or not phones:
        raise AlignmentError(f"need equally many phones and end times (got {len(phones)}, "
                             f"{len(ends)}), at least one")
    if any(b < a - 1e-6 for a, b in zip(ends, ends[1:])):
        raise AlignmentError("phone end times decrease")
    phones = list(phones)
    bounds = [seconds_to_boundary(t) for t in ends]
    first = seconds_to_boundary(start)
    if first > 0:
        phones.insert(0, SIL)
        bounds.insert(0, first)
    if bounds[-1] < total_frames and phones[-1] != SIL:
        phones.append(SIL)
        bounds.append(total_frames)
    bounds[-1] = total_frames
    b = np.clip(np.asarray(bounds, dtype=np.int64), 0, total_frames)
    b = np.maximum.accumulate(b)
    d = np.diff(np.concatenate([[0], b]))
    return phones, [int(x) for x in d]


def durations_from_starts(phones: list[str], starts: list[float], total_frames: int
                          ) -> tuple[list[str], list[int]]:
    """Phone start times (s; espeak-ng events) -> durations; the last phone ends at T."""
    if not phones:
        raise AlignmentError("empty phone sequence")
    # Events can trail the audio end slightly; the last phone ends at the audio end (or its
    # own start, which is then clipped to T).
    ends = list(starts[1:]) + [max(total_frames * HOP / SR, float(starts[-1]))]
    ph, d = durations_from_ends(phones, ends, total_frames, start=starts[0])
    return ph, d


def durations_from_samples(phones: list[str], counts: list[int], total_frames: int,
                           sample_rate: int = SR) -> tuple[list[str], list[int]]:
    """Per-phone sample counts (piper) -> durations, via cumulative end times."""
    if len(phones) != len(counts):
        raise AlignmentError("phones and sample counts differ in length")
    ends = np.cumsum(np.asarray(counts, dtype=np.int64)) / float(sample_rate)
    return durations_from_ends(phones, ends.tolist(), total_frames)


def durations_from_10ms(phones: list[str], starts: list[int], lengths: list[int],
                        total_frames: int) -> tuple[list[str], list[int]]:
    """pocketsphinx 10 ms frames (start, duration) -> mel-frame durations."""
    ends = [(s + n) * 0.01 for s, n in zip(starts, lengths)]
    return durations_from_ends(phones, ends, total_frames, start=starts[0] * 0.01 if starts else 0)


def check_durations(durations, total_frames: int) -> str | None:
    """Reason string if `durations` are not non-negative integers summing to T, else None."""
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in durations):
        return "durations must be integers"
    if any(x < 0 for x in durations):
        return "negative duration"
    s = int(sum(durations))
    if s != total_frames:
        return f"durations sum to {s}, expected {total_frames} frames"
    return None


def token_durations(durations, hop: int = 4) -> np.ndarray:
    """86 Hz durations [P] -> token-rate durations [P] by cumulative rounding (training.md §5).

    B_j = floor(E_j / hop + 1/2) for j < P, B_P = ceil(T / hop); D_j = B_j - B_{j-1} >= 0.
    Sums exactly to ceil(T / hop).
    """
    d = np.asarray(durations, dtype=np.int64)
    if d.size == 0:
        return d
    ends = np.cumsum(d)
    total = int(ends[-1])
    b = (2 * ends + hop) // (2 * hop)  # floor(E/hop + 1/2) in integers
    b[-1] = -(-total // hop)
    return np.diff(np.concatenate([[0], b]))


def expand(values, durations) -> np.ndarray:
    """values [P], durations [P] -> values repeated per frame [sum(durations)]."""
    return np.repeat(np.asarray(values), np.asarray(durations, dtype=np.int64))
