"""Shared helpers for the data tests: the tiny synthetic corpus (built once per session)."""

import pathlib

import numpy as np
import soundfile as sf


def tiny_corpus(tmp_path_factory) -> pathlib.Path:
    """Builds (once per test session / xdist worker) the tiny corpus; returns its folder."""
    from secoustic_jax.config.data import CorpusConfig
    from secoustic_jax.data.corpus import build_corpus

    root = tmp_path_factory.getbasetemp() / "tiny_corpus"
    if not (root / "meta.json").is_file():
        build_corpus(root, CorpusConfig(size="tiny", workers=1), log=lambda *a: None)
    return root


def write_tone(path, sr: int, seconds: float, f: float = 220.0, channels: int = 1):
    """Writes a PCM_16 tone; returns the number of samples."""
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    x = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")
    return n
