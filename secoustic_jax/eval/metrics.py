"""Objective per-utterance audio and mel metrics (evaluation.md §2.4–2.5, §4.1–4.4).

All audio metrics take mono float 16 kHz signals `ref [N]`, `deg [N]` (the reference and
the codec output, already resampled with `secoustic_jax.audio.io.resample` and trimmed to
a common length with `trim_to_common`). Mel metrics take natural-log mels `[T, 80]`.

Failures never raise inside `audio_metrics`: the failed metric is NaN and the reason is
recorded, so the evaluator can exclude and count it (§4: every metric reports failures).
The single-metric functions raise ValueError on malformed input (wrong rank, NaN, ...).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

EVAL_SR = 16000
LSD_N_FFT = 512
LSD_HOP = 128
LSD_EPS = 1e-10
MAX_LAG = 1024
# pesq's negative return codes under PesqError.RETURN_VALUES (pesq 0.0.4).
PESQ_ERRORS = {
    -1: "invalid sampling frequency",
    -2: "output malloc failure",
    -3: "mode error",
    -4: "invalid mode",
    -5: "buffer too short or too long",
    -6: "buffer too short",
    -7: "no utterances detected",
}


def _as_signal(x, name: str) -> np.ndarray:
    """Validates a mono float signal and returns it as contiguous float64 [N]."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a mono signal of shape [N], got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty signal")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected float samples, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: signal contains NaN or Inf")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _as_pair(ref, deg) -> tuple[np.ndarray, np.ndarray]:
    r, d = _as_signal(ref, "ref"), _as_signal(deg, "deg")
    if r.shape != d.shape:
        raise ValueError(f"ref and deg lengths differ ({r.size} vs {d.size}); "
                         "call trim_to_common first (evaluation.md §2.4)")
    return r, d


def _check_fs(fs: int) -> None:
    # pesq accepts only 8/16 kHz and prints its usage to stdout otherwise; the protocol
    # fixes 16 kHz for every audio metric, so anything else is a pipeline bug.
    if fs != EVAL_SR:
        raise ValueError(f"audio metrics run at {EVAL_SR} Hz only (evaluation.md §2.4), got fs={fs}")


def trim_to_common(ref, deg) -> tuple[np.ndarray, np.ndarray]:
    """Trims `ref [N1]` and `deg [N2]` to min(N1, N2) samples (evaluation.md §2.4)."""
    r, d = _as_signal(ref, "ref"), _as_signal(deg, "deg")
    n = min(r.size, d.size)
    return r[:n], d[:n]


@dataclasses.dataclass(frozen=True)
class PesqResult:
    """`value` is the MOS-LQO score, NaN on failure; `error` is pesq's negative code."""

    value: float
    error: int | None = None

    @property
    def reason(self) -> str | None:
        return None if self.error is None else f"pesq error {self.error}: {PESQ_ERRORS.get(self.error, 'unknown')}"


def pesq_score(ref, deg, mode: str = "wb", fs: int = EVAL_SR) -> PesqResult:
    """PESQ of `deg [N]` against `ref [N]` at 16 kHz, `mode` "wb" (headline) or "nb"."""
    from pesq import PesqError, pesq  # optional: pesq (eval extra)

    if mode not in ("wb", "nb"):
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    _check_fs(fs)
    r, d = _as_pair(ref, deg)
    # An all-zero reference makes the package divide by zero before it returns -7.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = pesq(fs, r, d, mode, on_error=PesqError.RETURN_VALUES)
    if isinstance(out, (int, np.integer)) or out < 0:
        return PesqResult(float("nan"), int(out))
    return PesqResult(float(out))


def stoi_score(ref, deg, extended: bool = False, fs: int = EVAL_SR) -> tuple[float, str | None]:
    """(Extended) STOI of `deg [N]` against `ref [N]`. Returns (value, failure reason):
    pystoi warns and returns 1e-5 when too little non-silent speech remains (< ~0.4 s);
    that value is meaningless, so it comes back as NaN with a reason."""
    from pystoi import stoi  # optional: pystoi (eval extra)

    _check_fs(fs)
    r, d = _as_pair(ref, deg)
    if not np.any(r):
        return float("nan"), "all-zero reference"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(r, d, fs, extended=extended))
    short = [w for w in caught if "Not enough STFT frames" in str(w.message)]
    if short:
        return float("nan"), "too little non-silent speech for STOI"
    return value, None


def power_spectrogram(x, n_fft: int = LSD_N_FFT, hop: int = LSD_HOP) -> np.ndarray:
    """|STFT|² of `x [N]` -> [T, n_fft/2+1], T = 1 + N // hop: periodic Hann, centred with
    reflect padding (evaluation.md §4.3). float64 so LSD is not limited by rounding."""
    sig = _as_signal(x, "x")
    pad = n_fft // 2
    if sig.size <= pad:
        raise ValueError(f"signal of {sig.size} samples is too short for a centred "
                         f"{n_fft}-point STFT (needs > {pad})")
    padded = np.pad(sig, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = np.fft.rfft(frames * window, axis=-1)
    return spec.real**2 + spec.imag**2


def lsd(ref, deg, fs: int = EVAL_SR) -> float:
    """Log-spectral distance (evaluation.md §4.3) of `deg [N]` vs `ref [N]` at 16 kHz:
    mean over frames of the RMS over bins of log10(P_ref + 1e-10) − log10(P_deg + 1e-10)."""
    _check_fs(fs)
    r, d = _as_pair(ref, deg)
    diff = np.log10(power_spectrogram(r) + LSD_EPS) - np.log10(power_spectrogram(d) + LSD_EPS)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-1))))


def mel_distances(ref_mel, deg_mel) -> dict[str, float]:
    """`mel_l1` = mean|X − X̂|, `mel_l2` = mean (X − X̂)² over the first T frames and all bins
    (evaluation.md §4.4). `ref_mel [T, 80]` is the input log-mel, `deg_mel [T2 ≥ T, 80]`
    the decoded one (the decoder returns ≥ T frames, model.md §3)."""
    x, y = np.asarray(ref_mel), np.asarray(deg_mel)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mel metrics need [T, n_mels] arrays with equal n_mels, got {x.shape} and {y.shape}")
    if y.shape[0] < x.shape[0]:
        raise ValueError(f"decoded mel has {y.shape[0]} frames, fewer than the input's {x.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("mel metrics need at least one frame")
    diff = x.astype(np.float64) - y[: x.shape[0]].astype(np.float64)
    if not np.isfinite(diff).all():
        raise ValueError("mel arrays contain NaN or Inf")
    return {"mel_l1": float(np.mean(np.abs(diff))), "mel_l2": float(np.mean(diff**2))}


def estimate_lag(ref, deg, max_lag: int = MAX_LAG) -> int:
    """Cross-correlation lag in samples within ±max_lag (evaluation.md §2.5).

    Positive means `deg` is delayed: deg[n] ≈ ref[n − lag]. `ref [N1]`, `deg [N2]` may
    differ in length. Raises ValueError if either signal is all zero (no defined peak).
    """
    from scipy.signal import correlate, correlation_lags  # optional: scipy.signal (~2 s)

    r, d = _as_signal(ref, "ref"), _as_signal(deg, "deg")
    if not np.any(r) or not np.any(d):
        raise ValueError("lag undefined: a signal is all zero")
    corr = correlate(d, r, mode="full", method="fft")
    lags = correlation_lags(d.size, r.size, mode="full")
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(corr[keep])])


@dataclasses.dataclass
class AudioMetrics:
    """Per-utterance audio metrics; failed metrics are NaN and named in `failures`."""

    values: dict[str, float]
    failures: dict[str, str]


AUDIO_METRICS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "lsd", "lag")


def audio_metrics(ref, deg, fs: int = EVAL_SR) -> AudioMetrics:
    """All §4.1–4.3 metrics plus the §2.5 lag for one 16 kHz pair `ref [N1]`, `deg [N2]`
    (trimmed to the shorter length here). Malformed input still raises."""
    _check_fs(fs)
    r, d = trim_to_common(ref, deg)
    values: dict[str, float] = {}
    failures: dict[str, str] = {}
    for mode in ("wb", "nb"):
        res = pesq_score(r, d, mode)
        values[f"pesq_{mode}"] = res.value
        if res.reason:
            failures[f"pesq_{mode}"] = res.reason
    for name, extended in (("stoi", False), ("estoi", True)):
        values[name], why = stoi_score(r, d, extended=extended)
        if why:
            failures[name] = why
    try:
        values["lsd"] = lsd(r, d)
    except ValueError as e:  # too short for the STFT
        values["lsd"], failures["lsd"] = float("nan"), str(e)
    try:
        values["lag"] = float(estimate_lag(r, d))
    except ValueError as e:  # silent signal
        values["lag"], failures["lag"] = float("nan"), str(e)
    return AudioMetrics(values, failures)
