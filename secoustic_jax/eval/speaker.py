"""Speaker similarity with resemblyzer 0.1.4 (evaluation.md §4.6, §5).

The encoder's weights ship inside the wheel, so it runs offline. It is loaded lazily on
first use and cached per process. Embeddings are 256-d and L2-normalised, so similarity
is a dot product (cosine).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

SPEAKER_SR = 16000
SPEAKER_MODEL_NAME = "resemblyzer 0.1.4"
_ENCODER = None
_LOCK = threading.Lock()


def load_speaker_encoder():
    """Returns the cached `resemblyzer.VoiceEncoder` on CPU."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            with warnings.catch_warnings():
                # webrtcvad imports pkg_resources, which setuptools 80 flags as deprecated.
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
                from resemblyzer import VoiceEncoder  # optional: resemblyzer (eval extra)
            _ENCODER = VoiceEncoder(device="cpu", verbose=False)
        return _ENCODER


def speaker_embedding(wav16k) -> np.ndarray:
    """256-d L2-normalised float32 embedding of a mono 16 kHz signal `wav16k [N]`.

    resemblyzer's `preprocess_wav` normalises the volume and trims silence with webrtcvad;
    raises ValueError if no speech is left (e.g. an all-zero signal).
    """
    x = np.asarray(wav16k)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"speaker_embedding expects a non-empty mono [N] signal, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("speaker_embedding expects finite float samples at 16 kHz")
    if not np.any(x):
        # resemblyzer's volume normalisation would divide by zero and produce NaNs.
        raise ValueError("speaker_embedding: all-zero signal has no speaker")
    encoder = load_speaker_encoder()
    from resemblyzer import preprocess_wav  # optional: resemblyzer (eval extra)

    wav = preprocess_wav(np.ascontiguousarray(x, dtype=np.float32), source_sr=SPEAKER_SR)
    if wav.size == 0 or not np.any(wav):
        raise ValueError("speaker_embedding: no speech left after resemblyzer's VAD trimming")
    return np.asarray(encoder.embed_utterance(wav), dtype=np.float32)


def cosine(a, b) -> float:
    """Cosine similarity of two embeddings `[D]` (renormalised, so any scale works)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"cosine expects two [D] vectors of equal shape, got {a.shape}, {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cosine of a zero vector is undefined")
    return float(a @ b / (na * nb))


def speaker_similarity(ref, deg) -> float:
    """`spk_sim` = cosine(e(ref), e(deg)) for two 16 kHz signals `[N1]`, `[N2]`."""
    return cosine(speaker_embedding(ref), speaker_embedding(deg))


def similarity_matrix(embeddings) -> np.ndarray:
    """Pairwise cosine `[K, K]` of `embeddings [K, D]` (for cross-speaker floors, §4.6)."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2:
        raise ValueError(f"similarity_matrix expects [K, D], got {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("similarity_matrix: zero embedding")
    e = e / norms
    return e @ e.T
