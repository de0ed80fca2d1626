"""Per-output scoring: vocode (Griffin-Lim here, or a waveform vocoded by the caller), fit
to the input length, resample to 16 kHz and compute every per-utterance metric.

A `Job` is plain data (numpy arrays and settings), so it runs either in this process or
in a spawned worker process (`Scorer(workers=2)`); the result is the same either way:
each metric is a deterministic function of the job, and thread counts are fixed
(Whisper `cpu_threads=1`, torch 1 thread) so that worker count never changes a number.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import threading
import time
import warnings
from typing import Iterable, Iterator

import numpy as np

from secoustic_jax.audio.io import resample
from secoustic_jax.audio.mel import log_mel_numpy
from secoustic_jax.eval import asr, metrics, speaker
from secoustic_jax.eval.dnsmos import METRICS, dnsmos
from secoustic_jax.eval.metrics import EVAL_SR, mel_distances
from secoustic_jax.vocoder import fit_length, griffin_lim

ASR_THREADS = 1  # fixed: CTranslate2 int8 GEMM results may depend on the thread count
CODEC_SR = 22050
AUDIO_MIN_S = 1.0  # PESQ/STOI/LSD/SIM only on utterances >= 1 s (E1-1s, evaluation.md §3)
PARENT_POLL_S = 1.0  # how soon a worker whose parent died notices it and exits


@dataclasses.dataclass
class Job:
    """One output to score. Exactly one of `mel` (vocoded here with Griffin-Lim, seed
    `seed`) or `wav` (already vocoded, 22.05 kHz [L]) is set. `ref16` [N16] is the 16 kHz
    reference, `num_samples` N the 22.05 kHz input length (output trimmed/padded to N).
    `input_wav` [N] (22.05 kHz) enables the audio-domain mel distance."""

    key: tuple
    ref16: np.ndarray
    num_samples: int
    mel: np.ndarray | None = None
    wav: np.ndarray | None = None
    input_wav: np.ndarray | None = None
    seed: int = 0
    audio_metrics: bool = True
    asr: bool = False
    embed: bool = False
    keep_wav: bool = False
    is_reference: bool = False  # the original itself: only ASR / embedding / MOS
    mos: bool = False  # DNSMOS of the (16 kHz) signal


@dataclasses.dataclass
class Scored:
    key: tuple
    metrics: dict
    failures: dict
    hyp: str | None = None
    embedding: np.ndarray | None = None
    wav: np.ndarray | None = None  # 22.05 kHz output when keep_wav


def _torch_one_thread() -> None:
    """resemblyzer's float32 LSTM reduces in an order that depends on torch's thread
    count; fixing it at 1 (workers and in-process alike) keeps embeddings identical."""
    import torch  # optional: torch (torch extra; resemblyzer needs it)

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _init_worker(parent: int) -> None:
    """Worker set-up: quiet warnings (the parent reports failures per metric), and leave
    when the parent `parent` (a pid) dies: the pool queues every job up front, so a worker
    of a killed eval.py would otherwise score the rest of the queue for nobody."""
    warnings.filterwarnings("ignore")
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _output_wav(job: Job) -> np.ndarray:
    wav = griffin_lim(np.asarray(job.mel, np.float32), seed=job.seed) if job.wav is None else job.wav
    return fit_length(np.asarray(wav, np.float32), job.num_samples)


def _audio_mel(job: Job, wav: np.ndarray, out: Scored) -> None:
    """Audio-domain mel distances: the front end on output vs input (evaluation.md §4.4)."""
    ref = log_mel_numpy(job.input_wav)
    deg = log_mel_numpy(wav)
    d = mel_distances(ref, deg)
    out.metrics["audio_mel_l1"], out.metrics["audio_mel_l2"] = d["mel_l1"], d["mel_l2"]


def _signal_metrics(job: Job, deg16: np.ndarray, out: Scored) -> None:
    if job.ref16.shape[0] < AUDIO_MIN_S * EVAL_SR:
        why = f"utterance shorter than {AUDIO_MIN_S} s (E1-1s rule, evaluation.md §3)"
        for name in metrics.AUDIO_METRICS:
            out.metrics[name], out.failures[name] = float("nan"), why
        return
    if not np.any(deg16):
        why = "output is all zeros"
        for name in metrics.AUDIO_METRICS:
            out.metrics[name], out.failures[name] = float("nan"), why
        return
    res = metrics.audio_metrics(job.ref16, deg16)
    out.metrics.update(res.values)
    out.failures.update(res.failures)


def _asr(signal16: np.ndarray, out: Scored) -> None:
    try:
        out.hyp = asr.transcribe(signal16, cpu_threads=ASR_THREADS)
    except ValueError as e:
        out.hyp, out.failures["asr"] = "", str(e)


def _embed(signal16: np.ndarray, out: Scored, long_enough: bool) -> None:
    _torch_one_thread()

    if not long_enough:
        out.failures["spk_sim"] = f"utterance shorter than {AUDIO_MIN_S} s"
        return
    try:
        out.embedding = speaker.speaker_embedding(signal16)
    except ValueError as e:
        out.failures["spk_sim"] = str(e)


def score(job: Job) -> Scored:
    """Scores one job (pure function of the job's contents)."""
    out = Scored(job.key, {}, {})
    long_enough = job.ref16.shape[0] >= AUDIO_MIN_S * EVAL_SR
    if job.is_reference:
        sig16 = np.asarray(job.ref16, np.float32)
    else:
        wav = _output_wav(job)
        sig16 = resample(wav, CODEC_SR, EVAL_SR)
        if job.input_wav is not None:
            _audio_mel(job, wav, out)
        if job.audio_metrics:
            _signal_metrics(job, sig16.astype(np.float64), out)
        if job.keep_wav:
            out.wav = wav
    if job.asr:
        _asr(sig16, out)
    if job.embed:
        _embed(sig16, out, long_enough)
    if job.mos:
        _mos(sig16, out)
    return out


def _mos(signal16: np.ndarray, out: Scored) -> None:
    try:
        out.metrics.update(dnsmos(signal16))
    except ValueError as e:
        for name in METRICS:
            out.metrics[name], out.failures[name] = float("nan"), str(e)


class Scorer:
    """Runs jobs in order, in-process (`workers=0`) or over a spawned process pool."""

    def __init__(self, workers: int = 0):
        self.workers = workers
        self._pool = None
        if workers > 0:
            ctx = multiprocessing.get_context("spawn")  # never fork a process holding JAX
            self._pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(os.getpid(),))

    def map(self, jobs: Iterable[Job]) -> Iterator[Scored]:
        """Results in job order (lazily; a pool works ahead on the next jobs)."""
        if self._pool is None:
            return map(score, jobs)
        return self._pool.map(score, jobs, chunksize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
