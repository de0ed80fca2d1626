"""Codebook statistics and bitrates of the token path (evaluation.md §4.7–4.8).

Tokens are FSQ indices 0 … 6560 (8 dims × 3 levels). Index 3280 = (3^8 − 1)/2 is the
all-zero code; a large share of it indicates collapse. Counts are pooled over a whole
test set: pass a list of per-utterance token arrays `[T'_i]` (or `[B, T']` batches).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from secoustic_jax.quantizer.g_quant import G_BITS, bits_per_vector

NUM_CODES = 6561
ZERO_CODE = 3280
SAMPLE_RATE = 22050
MEL_HOP = 256
PROMPT_DIM = 512  # G is 512 float32 values (model.md)
SIDE_INFO_BITS = PROMPT_DIM * 32


def token_counts(tokens: Iterable | np.ndarray, num_codes: int = NUM_CODES) -> np.ndarray:
    """Pooled histogram `[num_codes]` int64 of integer token arrays of any shape.

    `tokens` is one array or an iterable of arrays (utterances of different length).
    Raises ValueError for non-integer dtypes or indices outside [0, num_codes).
    """
    arrays = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
    counts = np.zeros(num_codes, np.int64)
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"token array {i} has dtype {a.dtype}; expected integer indices")
        flat = a.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= num_codes):
            raise ValueError(f"token array {i} has indices outside [0, {num_codes}): "
                             f"min {flat.min()}, max {flat.max()}")
        counts += np.bincount(flat, minlength=num_codes)
    return counts


def token_rate(hop_factor: int, sample_rate: int = SAMPLE_RATE, mel_hop: int = MEL_HOP) -> float:
    """Tokens per second: 22050 / (256·h), i.e. 86.13 Hz (h=1) or 21.53 Hz (h=4)."""
    if hop_factor not in (1, 4):
        raise ValueError(f"token hop factor must be 1 (86 Hz) or 4 (21.5 Hz), got {hop_factor}")
    return sample_rate / (mel_hop * hop_factor)


def nominal_bitrate(hop_factor: int, num_codes: int = NUM_CODES) -> float:
    """Token-only bitrate in bit/s: token rate × log2(6561) = 1092.1 (h=1) / 273.0 (h=4)."""
    return token_rate(hop_factor) * math.log2(num_codes)


def side_info(duration_s: float, bits: int = SIDE_INFO_BITS) -> dict[str, float]:
    """Prompt embedding G as side information: `bits` per utterance (16 384 for 512
    float32 values) and its rate amortised over the utterance (bits / duration)."""
    if not duration_s > 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    return {"side_info_bits": float(bits), "side_info_bps": bits / duration_s}


BITRATE_SECONDS = (3.0, 10.0, 30.0)


def _totals(tok_bps: float, g: int, durations) -> dict[str, float]:
    out = {"g_bits_per_utterance": float(g)}
    for s in BITRATE_SECONDS:
        out[f"total_kbps_{s:g}s"] = (tok_bps + g / s) / 1e3
    if durations:
        out["total_kbps_set_mean"] = float(np.mean([(tok_bps + g / d) / 1e3 for d in durations]))
    return out


def total_bitrates(hop_factor: int, g_dim: int, g_bits: int, durations=(),
                   num_codes: int = NUM_CODES) -> dict:
    """Tokens + G: the token rate, G's bits per utterance at the evaluated `g_bits`
    precision, the total kbps of an utterance of 3, 10 and 30 s and (given the set's
    `durations`) the mean total over its utterances; `with_g` repeats the totals for every
    transmissible precision (G_BITS), so a report shows what quantising G would save."""
    tok = nominal_bitrate(hop_factor, num_codes)
    durations = [d for d in durations if d > 0]
    out = {"g_bits": float(g_bits), "token_kbps": tok / 1e3}
    out.update(_totals(tok, bits_per_vector(g_dim, g_bits), durations))
    out["with_g"] = {str(b): _totals(tok, bits_per_vector(g_dim, b), durations) for b in G_BITS}
    return out


def entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy −Σ p ln p of a histogram `[K]` (0 ln 0 = 0), in nats."""
    c = np.asarray(counts, np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("entropy of an empty histogram is undefined")
    p = c[c > 0] / total
    return float(-np.sum(p * np.log(p)))


def codebook_stats(tokens_or_counts, hop_factor: int | None = None,
                   num_codes: int = NUM_CODES, top_k: int = 10) -> dict:
    """§4.7 statistics of pooled tokens: `tokens_or_counts` is one integer token array
    (any shape) or an iterable of them. For an already pooled histogram use
    `stats_from_counts`.

    Returns M (`num_tokens`), utilisation, perplexity, entropy (nats), normalised
    entropy, max-token and zero-code frequencies, the top-k [token, frequency] list and,
    when `hop_factor` is given, the nominal and entropy-bound bitrates (bit/s).
    """
    return stats_from_counts(token_counts(tokens_or_counts, num_codes), hop_factor, top_k)


def stats_from_counts(counts, hop_factor: int | None = None, top_k: int = 10) -> dict:
    """Same as `codebook_stats` for an already pooled histogram `counts [K]`."""
    c = np.asarray(counts)
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
        raise ValueError("counts must be a 1-D non-negative integer histogram")
    num_codes = c.size
    total = int(c.sum())
    if total == 0:
        raise ValueError("no tokens: codebook statistics need M > 0")
    h = entropy_nats(c)
    freq = c / total
    # Stable sort on −count: ties keep ascending token order, so the list is reproducible.
    order = np.argsort(-c, kind="stable")[:top_k]
    stats = {
        "num_tokens": total,
        "num_codes": num_codes,
        "used_codes": int((c > 0).sum()),
        "utilisation": float((c > 0).sum() / num_codes),
        "entropy_nats": h,
        "perplexity": float(math.exp(h)),
        "normalised_entropy": h / math.log(num_codes),
        "max_token_freq": float(freq.max()),
        "zero_code_freq": float(freq[ZERO_CODE]) if num_codes == NUM_CODES else None,
        "top_tokens": [[int(i), float(freq[i])] for i in order if c[i] > 0],
    }
    if hop_factor is not None:
        stats["nominal_bitrate_bps"] = nominal_bitrate(hop_factor, num_codes)
        stats["entropy_bitrate_bps"] = token_rate(hop_factor) * h / math.log(2)
    return stats


def subsample_tokens(tokens: Iterable | np.ndarray, num_tokens: int, seed: int = 0,
                     num_codes: int = NUM_CODES) -> np.ndarray:
    """Histogram `[num_codes]` of `num_tokens` tokens drawn without replacement from the
    pool, so utilisation can be compared at equal M (§4.7: U grows with M)."""
    counts = token_counts(tokens, num_codes)
    total = int(counts.sum())
    if not 0 < num_tokens <= total:
        raise ValueError(f"num_tokens must be in 1..{total} (the pool size), got {num_tokens}")
    rng = np.random.default_rng(seed)
    return rng.multivariate_hypergeometric(counts, num_tokens).astype(np.int64)
