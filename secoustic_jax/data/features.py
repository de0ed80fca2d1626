"""Full-utterance log-mel on the host, with an optional on-disk cache.

The pipeline crops from the *full-utterance* mel so that crop edges equal the offline
front end (training.md §7). The mel is the project's front end (`audio.mel`), computed
with its numpy implementation (float64 FFT, float32 result) so that worker processes
need no JAX device; `tests/test_mel.py` checks it against the jitted one.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import pathlib

import numpy as np

from secoustic_jax.atomic import atomic_path
from secoustic_jax.audio.io import load_audio
from secoustic_jax.audio.mel import log_mel_numpy
from secoustic_jax.config.model import MelConfig


def cache_key(audio: pathlib.Path, cfg: MelConfig) -> str:
    """Hash of (absolute path, size, mtime, mel settings): stale entries are never reused."""
    st = audio.stat()
    blob = f"{audio.resolve()}|{st.st_size}|{st.st_mtime_ns}|{cfg}".encode()
    return hashlib.sha1(blob).hexdigest()


def utterance_mel(audio, cfg: MelConfig = MelConfig(), cache_dir=None) -> np.ndarray:
    """Audio file -> float32 log-mel [T, n_mels], T = floor(N22 / hop).

    Raises AudioError (a ValueError) for unreadable/empty/NaN audio and ValueError for audio
    shorter than the front end accepts. With `cache_dir`, reads/writes `<key>.npy` there.
    """
    audio = pathlib.Path(audio)
    path = None
    if cache_dir is not None:
        key = cache_key(audio, cfg)
        path = pathlib.Path(cache_dir) / key[:2] / f"{key}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                pass  # a torn or foreign file: recompute and overwrite below
    wav, _ = load_audio(audio, target_sr=cfg.sample_rate)
    mel = log_mel_numpy(wav, cfg).astype(np.float32)
    if path is not None:
        with atomic_path(path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as f:
            np.save(f, mel)
    return mel


def _cached_mel(job) -> int:
    audio, cfg, cache_dir = job
    return int(utterance_mel(audio, cfg, cache_dir).shape[0])


def fill_cache(audio_files, cfg: MelConfig, cache_dir, workers: int = 2) -> int:
    """Computes the cached mel of every file not cached yet (process pool) -> frames in all.

    Training reads the same cache, so this only moves the first epoch's front-end cost
    ahead, where it does not distort a measurement of the step time."""
    jobs = [(pathlib.Path(a), cfg, cache_dir) for a in audio_files]
    if workers <= 1:
        return sum(map(_cached_mel, jobs))
    with mp.get_context("spawn").Pool(workers) as pool:
        return sum(pool.imap_unordered(_cached_mel, jobs, chunksize=8))
