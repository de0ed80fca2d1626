"""The tokens file of `secoustic encode` (.npz): what a decoder needs, checked on read.

Fields (version 2):
  format_version 2, variant str, tokens [T'] int32, num_frames T, num_samples N (22.05 kHz),
  sample_rate, source_sample_rate, g_bits (32, 8, 6 or 4), and G as
    g_bits 32: paralinguistic [d] float32;
    g_bits k : paralinguistic_codes [d] int8 + paralinguistic_scale float16 (quantizer/g_quant).
Version 1 files (float32 `paralinguistic`, no g_bits) still load, as g_bits 32.

`read` refuses, naming the field: a wrong version, variant, dtype or shape; lengths that do
not fit the token count (T' = ceil(T / hop), T = N // 256); G fields that disagree with
g_bits or the codec's width. It returns the fields with `paralinguistic` as float32 [d],
dequantised: what the decoder takes.
"""

from __future__ import annotations

import numpy as np

from secoustic_jax.quantizer.g_quant import G_BITS, bits_per_vector, dequantize_g, quantize_g

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def payload(config, tokens, g, *, num_frames: int, num_samples: int, source_sample_rate: int,
            g_bits: int = 32) -> dict:
    """The .npz fields for tokens [T'] and G [d] (stored at `g_bits` precision)."""
    if g_bits not in G_BITS:
        raise ValueError(f"g_bits must be one of {G_BITS}, got {g_bits}")
    out = {"format_version": np.int64(FORMAT_VERSION), "variant": np.str_(config.variant),
           "tokens": np.asarray(tokens, np.int32), "num_frames": np.int64(num_frames),
           "num_samples": np.int64(num_samples), "sample_rate": np.int64(config.mel.sample_rate),
           "source_sample_rate": np.int64(source_sample_rate), "g_bits": np.int64(g_bits)}
    g = np.asarray(g, np.float32)
    if g_bits == 32:
        out["paralinguistic"] = g
    else:
        codes, scale = quantize_g(g, g_bits)
        out["paralinguistic_codes"], out["paralinguistic_scale"] = codes, np.float16(scale)
    return out


def decoded(data: dict) -> dict:
    """The fields with `paralinguistic` float32 [d] as the decoder receives it."""
    bits = int(data.get("g_bits", 32))
    if bits == 32:
        return dict(data)
    g = dequantize_g(data["paralinguistic_codes"], data["paralinguistic_scale"], bits)
    return dict(data, paralinguistic=g)


def g_side_bits(data: dict) -> int:
    """Bits the file's G costs (its dimension at its precision)."""
    d = decoded(data)["paralinguistic"].shape[-1]
    return bits_per_vector(d, int(data.get("g_bits", 32)))


def read(path, config) -> dict:
    """Loads and validates a tokens file for a codec of `config` -> decoded fields."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: unreadable .npz ({type(e).__name__}: {e})") from e
    need = ("format_version", "variant", "tokens", "num_frames", "num_samples")
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"{path}: not a secoustic token file (missing {missing})")
    version = int(data["format_version"])
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: token file format version {version}, this code reads "
                         f"versions {READABLE_VERSIONS}")
    if str(data["variant"]) != config.variant:
        raise ValueError(f"{path}: tokens are for the {data['variant']} variant, but the "
                         f"checkpoint is {config.variant}")
    if data["tokens"].ndim != 1 or data["tokens"].dtype != np.int32:
        raise ValueError(f"{path}: tokens must be int32 [T'], got {data['tokens'].dtype} "
                         f"{list(data['tokens'].shape)}")
    _check_g(path, data, version, config.paralinguistic.embed_dim)
    _check_lengths(path, data, config)
    return decoded(data)


def _check_g(path, data: dict, version: int, dim: int) -> None:
    bits = 32 if version == 1 else int(data.get("g_bits", -1))
    if bits not in G_BITS:
        raise ValueError(f"{path}: g_bits={bits} is not one of {G_BITS}")
    if version == 2 and data["g_bits"].ndim != 0:
        raise ValueError(f"{path}: g_bits must be a scalar")
    want = {"paralinguistic": (np.float32, (dim,))} if bits == 32 else {
        "paralinguistic_codes": (np.int8, (dim,)), "paralinguistic_scale": (np.float16, ())}
    other = {"paralinguistic", "paralinguistic_codes", "paralinguistic_scale"} - set(want)
    stray = sorted(k for k in other if k in data)
    if stray:
        raise ValueError(f"{path}: g_bits={bits} but the file also holds {stray}")
    for key, (dtype, shape) in want.items():
        if key not in data:
            raise ValueError(f"{path}: g_bits={bits} needs the field {key!r}")
        a = data[key]
        if a.dtype != dtype or a.shape != shape:
            raise ValueError(f"{path}: {key} must be {np.dtype(dtype).name} {list(shape)} for "
                             f"this codec, got {a.dtype} {list(a.shape)}")
    if bits == 32 and not np.isfinite(data["paralinguistic"]).all():
        raise ValueError(f"{path}: paralinguistic holds NaN/Inf values")
    if bits != 32:
        try:
            dequantize_g(data["paralinguistic_codes"], data["paralinguistic_scale"], bits)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _check_lengths(path, data: dict, config) -> None:
    """num_frames must give the file's token count (T' = ceil(T / hop)) and num_samples
    that frame count (T = N // hop_length): a corrupt length would otherwise decode to a
    silently wrong length or a huge allocation."""
    n_tok, hop, hop_len = data["tokens"].shape[0], config.hop, config.mel.hop_length
    for key in ("num_frames", "num_samples", "sample_rate"):
        if key in data and (data[key].ndim != 0 or not np.issubdtype(data[key].dtype, np.integer)):
            raise ValueError(f"{path}: {key} must be an integer scalar, got {data[key].dtype} "
                             f"{list(data[key].shape)}")
    frames, samples = int(data["num_frames"]), int(data["num_samples"])
    if not hop * (n_tok - 1) < frames <= hop * n_tok:
        raise ValueError(f"{path}: num_frames={frames} does not fit {n_tok} tokens at hop "
                         f"{hop} (need {hop * (n_tok - 1) + 1}..{hop * n_tok})")
    if samples // hop_len != frames:
        raise ValueError(f"{path}: num_samples={samples} does not give num_frames={frames} "
                         f"(need {frames * hop_len}..{(frames + 1) * hop_len - 1})")
    rate = int(data.get("sample_rate", config.mel.sample_rate))
    if rate != config.mel.sample_rate:
        raise ValueError(f"{path}: sample_rate={rate}, the codec runs at "
                         f"{config.mel.sample_rate}")
