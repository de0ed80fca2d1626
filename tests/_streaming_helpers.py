"""Shared fixtures for the streaming tests: tiny codecs with diverse tokens, offline refs."""

from __future__ import annotations

import functools

import jax
import numpy as np

from secoustic_jax.api import init_variables
from secoustic_jax.config import codec_preset
from secoustic_jax.model.codec import SecoustiCodec

THRESHOLD = float(np.arctanh(0.5 / 0.999))  # |u| where round(0.999 tanh u) flips (L = 3)
TARGET_STD = 0.818  # as in the goldens: diverse tokens, values well spread around +-0.55


def speech_mel(golden_dir, frames: int, row: int = 0) -> np.ndarray:
    """Real speech log-mel [frames, 80] from the golden inputs (tiled if longer)."""
    mel = np.load(golden_dir / "codec_tiny_21_5hz_io.npz")["mel_in"][0]
    mel = np.concatenate([mel, mel[::-1]], axis=0)  # 2200 frames, continuous at the seam
    start = (row * 337) % (mel.shape[0] - 1)
    idx = (start + np.arange(frames)) % mel.shape[0]
    return mel[idx].astype(np.float32)


def offline(variables, cfg, method, *args):
    """Runs a SecoustiCodec entry point offline (jitted), numpy out."""
    fn = jax.jit(lambda v, *a: SecoustiCodec(cfg).apply(v, *a, method=method))
    return jax.tree.map(np.asarray, fn(variables, *args))


@functools.lru_cache(maxsize=4)
def diverse_tiny(preset: str, seed: int = 0):
    """(cfg, variables, margin): a tiny codec whose fsq.project_in is rescaled per output
    dimension to std TARGET_STD over speech (model.md §7: random weights otherwise give
    token 3280 everywhere); margin = smallest |(|u| - threshold)| on the calibration mel."""
    cfg = codec_preset(preset)
    variables = init_variables(cfg, seed)
    mel = speech_mel(_golden(), 1200)[None]
    u = offline(variables, cfg, "encode", mel).projected.reshape(-1, 8)
    mean, std = u.mean(0), u.std(0)
    scale = TARGET_STD / std
    # Then shift each dimension by the delta (|delta| <= 0.05) that keeps every value
    # farthest from the rounding thresholds, so float noise cannot flip a token.
    z = (u - mean) * scale
    deltas = np.linspace(-0.05, 0.05, 201)
    margins = np.abs(np.abs(z[None] + deltas[:, None, None]) - THRESHOLD).min(axis=1)
    mean = mean - deltas[np.argmax(margins, axis=0)] / scale
    p = jax.tree.map(np.asarray, variables["params"])
    pin = p["fsq"]["project_in"]
    pin["kernel"] = (pin["kernel"] * scale[None, :]).astype(np.float32)
    pin["bias"] = (scale * (pin["bias"] - mean)).astype(np.float32)
    variables = {"params": p, "batch_stats": variables["batch_stats"]}
    u2 = offline(variables, cfg, "encode", mel).projected
    margin = float(np.min(np.abs(np.abs(u2) - THRESHOLD)))
    return cfg, variables, margin


def _golden():
    from conftest import GOLDEN
    return GOLDEN
