"""Features on the device (`pipeline.features = "waveform"`): waveform windows -> log-mel.

The host cuts int16 waveform windows instead of mel crops (`pipeline._crop`, via
`audio.mel.frame_window`): `wav` [B, S * hop + 2 pad] for the S-frame crop and
`prompt_wav` [B, P * hop + 2 pad] for the P-frame prompt, the samples those frames read
from the reflect-padded utterance. The trainer places such a batch on the devices and runs
`batch_log_mel` there (`training.sharding.global_batch`), so every consumer downstream sees
the usual `mel` / `prompt_mel` keys. Frames past the valid length get the log floor, as
the host crops pad them, so the result equals the host mel of the same int16 waveform
within the front end's float32 tolerance (tests/test_device_mel.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from secoustic_jax.audio.mel import log_mel_windows
from secoustic_jax.config.model import MelConfig
from secoustic_jax.data.crops import LOG_FLOOR

PCM_SCALE = 32768.0  # int16 PCM -> [-1, 1), as the packer stores it (round(x * 32768))
WAVE_KEYS = ("wav", "prompt_wav")


def batch_log_mel(batch: dict, cfg: MelConfig) -> dict:
    """{wav, prompt_wav (int16), mel_mask [B, S], prompt_lengths [B], ...} -> the same dict
    with mel [B, S, n_mels] and prompt_mel [B, P, n_mels] (float32) in place of the
    waveforms. A batch without `wav` is returned unchanged."""
    if "wav" not in batch:
        return batch
    missing = [k for k in ("prompt_wav", "mel_mask", "prompt_lengths") if k not in batch]
    if missing:
        raise ValueError(f"batch_log_mel: a waveform batch needs {missing}")
    out = {k: v for k, v in batch.items() if k not in WAVE_KEYS}
    out["mel"] = _masked_mel(batch["wav"], jnp.asarray(batch["mel_mask"]) > 0, cfg)
    frames = (jnp.asarray(batch["prompt_wav"]).shape[1] - 2 * cfg.pad) // cfg.hop_length
    prompt_valid = jnp.arange(frames)[None, :] < jnp.asarray(batch["prompt_lengths"])[:, None]
    out["prompt_mel"] = _masked_mel(batch["prompt_wav"], prompt_valid, cfg)
    return out


def _masked_mel(wav, valid, cfg: MelConfig):
    """int16 windows [B, N * hop + 2 pad] and valid [B, N] -> log-mel [B, N, n_mels], with
    the log floor where not valid (as the host crops pad)."""
    mel = log_mel_windows(jnp.asarray(wav).astype(jnp.float32) / PCM_SCALE, cfg)
    return jnp.where(valid[..., None], mel, LOG_FLOOR)


@functools.lru_cache(maxsize=16)
def compiled(cfg: MelConfig, sharding=None):
    """`batch_log_mel` jitted for `cfg`; with a `sharding` (hashable, e.g. the trainer's
    batch NamedSharding) its outputs are placed there, else where the inputs lie."""
    fn = functools.partial(batch_log_mel, cfg=cfg)
    return jax.jit(fn) if sharding is None else jax.jit(fn, out_shardings=sharding)


def host_mel(batch: dict, cfg: MelConfig) -> dict:
    """A host-local batch with numpy `mel` / `prompt_mel` (for host-side readers of the mel:
    data-dependent init, validation media); computed on the default device."""
    if "wav" not in batch:
        return batch
    if cfg is None:
        raise ValueError("host_mel: a waveform batch needs the model's mel config")
    return jax.device_get(compiled(cfg)(batch))


def host_mel_batches(source, cfg: MelConfig):
    """Iterator of `host_mel` batches over `source`."""
    return (host_mel(b, cfg) for b in source)
