"""Batched, jitted codec passes over a test set (evaluation.md §1-§2.2).

Utterances are sorted by length and grouped into batches whose padded token length falls
in the same `api.bucket_length` bucket, and whose batch size is a power of two (the last
batch of a bucket is filled by repeating its last item; those rows are discarded). So the
number of compiled shapes is (#buckets x #batch sizes) per entry point, and each item's
outputs equal its own unpadded run: the codec is causal, the 21.5 Hz encoder masks
padded frames, and the front end below reproduces the unpadded mel exactly.

Front end of a batch: each waveform x [N] is extended on the right by its own 384-sample
reflection (what the front end's reflect padding would add) and then zero-padded to a
common length; the first floor(N/256) frames of its log-mel are then exactly those of
`log_mel(x)`, because no frame t < floor(N/256) reaches beyond x's reflected tail.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import numpy as np

from secoustic_jax.api import bucket_length
from secoustic_jax.audio.mel import log_mel
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.quantizer.g_quant import roundtrip_g

# Batches group items of one bucket: 4 steps per octave (up to 25 % padding) keeps batches
# full and the executables few; each padded batch is a bucket of the api's finer rule too.
EVAL_STEPS_PER_OCTAVE = 4

HOP_SAMPLES = 256
FRONT_PAD = 384


@dataclasses.dataclass
class CodecOutputs:
    """Per-utterance codec outputs (numpy, valid frames only).

    mel: input log-mel [T, 80]; tokens: [T'] int32; g: paralinguistic vector [d];
    mel_token: decode_tokens(tokens, g) [hop T', 80]; mel_acoustic: decode_acoustic(A)
    [hop T', 80]; semantic_mean: mean over time of the decoded code embeddings S [d].
    """

    mel: np.ndarray
    tokens: np.ndarray
    g: np.ndarray
    mel_token: np.ndarray | None = None
    mel_acoustic: np.ndarray | None = None
    semantic_mean: np.ndarray | None = None


def plan_batches(lengths: Sequence[int], token_len: Callable[[int], int], max_batch: int = 8,
                 max_frames: int = 16384) -> list[list[int]]:
    """Groups item indices (sorted by length, ties by index) into batches of one padded
    token bucket each, at most `max_batch` items and `max_frames` padded mel frames.
    Returns lists of item indices (not yet padded to a power of two)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_bucket = None
    for i in order:
        b = bucket_length(token_len(lengths[i]), steps_per_octave=EVAL_STEPS_PER_OCTAVE)
        limit = max(1, min(max_batch, max_frames // max(b, 1)))
        if current and (b != current_bucket or len(current) >= limit):
            batches.append(current)
            current = []
        current_bucket = b
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pow2_pad(idx: list[int]) -> list[int]:
    """Pads a batch of indices to the next power of two by repeating the last index."""
    size = 1 << (len(idx) - 1).bit_length()
    return idx + [idx[-1]] * (size - len(idx))


def batch_mel(wavs: Sequence[np.ndarray], frames: int, mel_cfg) -> np.ndarray:
    """Log-mels of waveforms [N_i] as one batch -> [B, frames + 1, 80]; item i is exact in
    its first floor(N_i / 256) frames (see the module docstring). `frames` >= max T_i."""
    width = frames * HOP_SAMPLES + FRONT_PAD
    batch = np.zeros((len(wavs), width), np.float32)
    for i, w in enumerate(wavs):
        ext = np.pad(np.asarray(w, np.float32), (0, FRONT_PAD), mode="reflect")
        batch[i, : ext.shape[0]] = ext[:width]
    return np.asarray(log_mel(batch, mel_cfg))


@functools.lru_cache(maxsize=8)
def _semantic_jit(cfg):
    """Jitted (variables, tokens [B, T']) -> decoded code embeddings S = project_out(codes)
    [B, T', d], one per config (like the api's entry points)."""
    module = SecoustiCodec(cfg)
    return jax.jit(lambda v, t: module.apply(v, t, method=lambda m, x: m.fsq.decode(x)))


def _semantic(codec, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(_semantic_jit(codec.config)(codec.variables, tokens))


def run_batch(codec, wavs: Sequence[np.ndarray], *, decode: bool = True,
              semantic: bool = False, g_bits: int = 32) -> list[CodecOutputs]:
    """The codec on one batch of 22.05 kHz waveforms (any lengths >= 640 samples). G is
    taken as transmitted at `g_bits` precision (quantizer/g_quant.py; 32 = float32)."""

    cfg = codec.config
    frames = [int(w.shape[0]) // HOP_SAMPLES for w in wavs]
    hop = cfg.hop
    t_pad = hop * bucket_length(cfg.num_tokens(max(frames)), steps_per_octave=EVAL_STEPS_PER_OCTAVE)
    mel = batch_mel(wavs, t_pad, cfg.mel)[:, :t_pad]
    lengths = np.asarray(frames, np.int64)
    enc = codec.encode_mel(mel, lengths)
    g = roundtrip_g(codec.prompt_embedding(mel, lengths), g_bits)
    mel_tok = codec.decode_tokens(enc.tokens, g) if decode else None
    mel_ac = codec.decode_acoustic(enc.acoustic) if decode else None
    sem = _semantic(codec, enc.tokens) if semantic else None
    out = []
    for i, t in enumerate(frames):
        n = int(enc.lengths[i])
        out.append(CodecOutputs(
            mel=mel[i, :t].copy(), tokens=enc.tokens[i, :n].copy(), g=g[i].copy(),
            mel_token=None if mel_tok is None else mel_tok[i, : hop * n].copy(),
            mel_acoustic=None if mel_ac is None else mel_ac[i, : hop * n].copy(),
            semantic_mean=None if sem is None else sem[i, :n].mean(axis=0)))
    return out


def run_codec(codec, wavs: Sequence[np.ndarray], *, max_batch: int = 8, max_frames: int = 16384,
              semantic: bool = False, g_bits: int = 32, progress=None) -> list[CodecOutputs]:
    """`run_batch` over every waveform, batched by length bucket; outputs in input order.
    `progress` is an optional callable(n_done_items) (e.g. a tqdm's update)."""
    cfg = codec.config
    lengths = [int(w.shape[0]) // HOP_SAMPLES for w in wavs]
    results: list[CodecOutputs | None] = [None] * len(wavs)
    for idx in plan_batches(lengths, cfg.num_tokens, max_batch, max_frames):
        padded = pow2_pad(idx)
        outs = run_batch(codec, [wavs[i] for i in padded], semantic=semantic, g_bits=g_bits)
        for i, o in zip(idx, outs):
            results[i] = o
        if progress is not None:
            progress(len(idx))
    return results  # type: ignore[return-value]


def decode_with(codec, tokens: Sequence[np.ndarray], gs: Sequence[np.ndarray], *,
                max_batch: int = 8, max_frames: int = 16384) -> list[np.ndarray]:
    """decode_tokens(tokens_i [T'_i], g_i [d]) for every pair, batched by length bucket
    (the voice-conversion path). Returns mels [hop T'_i, 80] in input order."""
    hop = codec.config.hop
    lengths = [int(t.shape[0]) for t in tokens]
    out: list[np.ndarray | None] = [None] * len(tokens)
    for idx in plan_batches(lengths, lambda n: n, max_batch, max_frames):
        padded = pow2_pad(idx)
        width = max(lengths[i] for i in padded)
        zero = (codec.config.codebook_size - 1) // 2
        tok = np.full((len(padded), width), zero, np.int32)
        for r, i in enumerate(padded):
            tok[r, : lengths[i]] = tokens[i]
        mel = codec.decode_tokens(tok, np.stack([gs[i] for i in padded]))
        for r, i in enumerate(idx):
            out[i] = mel[r, : hop * lengths[i]].copy()
    return out  # type: ignore[return-value]
