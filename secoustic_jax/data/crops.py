"""Aligned random crops of one utterance (training.md §5, §7); pure numpy, host side.

Given the full-utterance mel [T, 80] and its phone IDs / durations (86.13 Hz, sum T):
  * frame-level labels are computed once per utterance, then sliced with the segment;
  * token-level (21.5 Hz) labels come from cumulative rounding of the whole utterance;
    for a crop start s that is a multiple of the token hop, the slice equals cumulative
    rounding of the crop's own durations (the rounding commutes with a shift by s/hop);
  * the phone sequence for the phoneme encoder keeps the phones overlapping the segment
    (zero-length phones between them included), cutting the two boundary phones.
"""

from __future__ import annotations

import numpy as np

from secoustic_jax.data.align import token_durations

LOG_FLOOR = float(np.log(1e-5))  # value of a silent log-mel frame; used for padding


class CropError(ValueError):
    """The crop cannot be made (too short, too many phones); `kind` is the report key."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def crop_start(total: int, length: int, multiple: int, rng: np.random.Generator | None) -> int:
    """Start of a `length`-frame window, a multiple of `multiple`; random if rng else centred."""
    room = max(total - length, 0)
    if rng is None:
        return (room // 2) // multiple * multiple
    return int(rng.integers(room // multiple + 1)) * multiple


def prompt_crop(mel: np.ndarray, frames: int, rng: np.random.Generator | None
                ) -> tuple[np.ndarray, int]:
    """[T, 80] -> ([frames, 80] padded with the log floor, valid length min(T, frames)).

    Random start in [0, T - frames] in training (rng), centred (T - L) // 2 otherwise,
    matching the API's centred prompt crop (model.md §11).
    """
    start, length = prompt_window(mel.shape[0], frames, rng)
    out = np.full((frames, mel.shape[1]), LOG_FLOOR, dtype=np.float32)
    out[:length] = mel[start:start + length]
    return out, length


def prompt_window(total: int, frames: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """(start, valid length) of `prompt_crop`'s window in a `total`-frame utterance."""
    length = min(total, frames)
    start = int(rng.integers(total - length + 1)) if rng is not None else (total - length) // 2
    return start, length


def segment_labels(ids: np.ndarray, durations: np.ndarray, start: int, length: int,
                   hop: int, max_phones: int) -> dict[str, np.ndarray]:
    """Alignment of frames [start, start + length) of an utterance.

    Args:
      ids: int32 [P] phone IDs; durations: int [P] mel frames, sum T.
      start: crop start, a multiple of `hop`; length: crop frames (multiple of `hop`);
        frames beyond T (padding of short utterances) get phone 0.
      max_phones: static phone axis; more phones in the crop raise CropError.
    Returns int32 arrays: phones [max_phones], phone_durations [max_phones] (86 Hz,
    sum = valid frames), phone_token_durations [max_phones] (sum = valid tokens),
    frame_phones [length], frame_phone_index [length], token_phones [length // hop],
    token_phone_index [length // hop] (index into `phones`, -1 at padding).
    """
    d = np.asarray(durations, dtype=np.int64)
    total = int(d.sum())
    valid = max(min(length, total - start), 0)
    ends = np.cumsum(d)
    starts = ends - d
    # Phones overlapping [start, start + valid): contiguous range j0..j1 inclusive.
    j0 = int(np.searchsorted(ends, start, side="right"))
    j1 = int(np.searchsorted(ends, start + valid - 1, side="right"))
    n = j1 - j0 + 1
    if valid <= 0:
        raise CropError("too_short", f"crop start {start} is beyond the {total} frames")
    if n > max_phones:
        raise CropError("too_many_phones", f"{n} phones in the crop exceed max_phones={max_phones}")
    local = np.clip(ends[j0:j1 + 1], start, start + valid) - np.clip(starts[j0:j1 + 1], start,
                                                                      start + valid)
    frame_idx = np.full(length, -1, np.int64)
    frame_idx[:valid] = np.repeat(np.arange(n), local)
    n_tok = length // hop
    tok_valid = -(-valid // hop)
    # Global cumulative rounding, sliced: tokens start/hop ... start/hop + tok_valid.
    tok_global = np.repeat(np.arange(len(d)), token_durations(d, hop))
    tok_idx = np.full(n_tok, -1, np.int64)
    tok_idx[:tok_valid] = tok_global[start // hop:start // hop + tok_valid] - j0
    out = {
        "phones": _pad(ids[j0:j1 + 1], max_phones),
        "phone_durations": _pad(local, max_phones),
        "phone_token_durations": _pad(np.bincount(tok_idx[:tok_valid], minlength=n), max_phones),
        "frame_phone_index": frame_idx.astype(np.int32),
        "token_phone_index": tok_idx.astype(np.int32),
    }
    seq = np.asarray(ids, np.int64)[j0:j1 + 1]
    out["frame_phones"] = np.where(frame_idx >= 0, seq[np.maximum(frame_idx, 0)], 0).astype(np.int32)
    out["token_phones"] = np.where(tok_idx >= 0, seq[np.maximum(tok_idx, 0)], 0).astype(np.int32)
    return out


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, np.int32)
    out[:len(x)] = x
    return out


def make_example(mel: np.ndarray, ids: np.ndarray | None, durations: np.ndarray | None, *,
                 segment: int, hop: int, multiple: int, prompt_frames: int, max_phones: int,
                 pad_short: bool, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """One training example from a full-utterance mel [T, 80] (random if rng, else centred).

    Returns mel [segment, 80], mel_mask [segment] (1 valid), prompt_mel [prompt_frames, 80],
    prompt_length, crop_start and the `segment_labels` arrays (zeros without alignment).
    """
    ex, (start, valid), (pstart, plen) = plan_example(
        mel.shape[0], ids, durations, segment=segment, hop=hop, multiple=multiple,
        prompt_frames=prompt_frames, max_phones=max_phones, pad_short=pad_short, rng=rng)
    seg = np.full((segment, mel.shape[1]), LOG_FLOOR, np.float32)
    seg[:valid] = mel[start:start + valid]
    prompt = np.full((prompt_frames, mel.shape[1]), LOG_FLOOR, dtype=np.float32)
    prompt[:plen] = mel[pstart:pstart + plen]
    return {"mel": seg, "prompt_mel": prompt, **ex}


def plan_example(total: int, ids: np.ndarray | None, durations: np.ndarray | None, *,
                 segment: int, hop: int, multiple: int, prompt_frames: int, max_phones: int,
                 pad_short: bool, rng: np.random.Generator | None):
    """The windows and labels of `make_example` for a `total`-frame utterance, without the
    features: (example without mel / prompt_mel, (crop start, valid frames), (prompt
    start, prompt length)). Draws from rng in make_example's order (crop, then prompt)."""
    if total < segment and not pad_short:
        raise CropError("too_short", f"{total} frames < crop of {segment} frames")
    start = crop_start(total, segment, multiple, rng)
    valid = min(segment, total - start)
    mask = np.zeros(segment, np.int32)
    mask[:valid] = 1
    if ids is not None:
        labels = segment_labels(ids, durations, start, segment, hop, max_phones)
    else:
        labels = {k: np.zeros(n, np.int32) for k, n in (
            ("phones", max_phones), ("phone_durations", max_phones),
            ("phone_token_durations", max_phones), ("frame_phones", segment),
            ("frame_phone_index", segment), ("token_phones", segment // hop),
            ("token_phone_index", segment // hop))}
    pstart, plen = prompt_window(total, prompt_frames, rng)
    ex = {"mel_mask": mask, "prompt_lengths": np.int32(plen), "crop_start": np.int32(start),
          **labels}
    return ex, (start, valid), (pstart, plen)
