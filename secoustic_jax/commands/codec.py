"""`secoustic` codec sub-commands: import-torch, export-torch, encode, decode, roundtrip.

Every problem with an input (wrong-variant or corrupt checkpoint, missing or mis-shaped
key, unreadable / empty / NaN audio, wrong .npz format or variant) raises a ValueError
subclass whose message names it; `secoustic_jax.cli` prints it and exits with code 2.

export-torch reads its source through `EXPORT_SOURCES`: "module:function" names tried in
order, each `fn(path) -> (CodecConfig, variables) | None` (None: not my format). A module
that is not part of the tree is skipped, so the training code can add its checkpoint
reader without touching this file's logic.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys
import time

import numpy as np

from secoustic_jax import tokens_file
from secoustic_jax.atomic import atomic_path
from secoustic_jax.audio.io import expected_length, load_audio, save_wav
from secoustic_jax.config.base import ConfigError, apply_overrides
from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import load_experiment
from secoustic_jax.precision import Precision, cli_type
from secoustic_jax.quantizer.g_quant import G_BITS

EXPORT_SOURCES = (
    "secoustic_jax.commands.codec:codec_dir_source",  # a Codec.save directory
    "secoustic_jax.training.export:codec_variables_from_checkpoint",  # training checkpoints
)


def codec_dir_source(path):
    """A `Codec.save` directory -> (config, variables), else None."""
    from secoustic_jax.checkpoint import codec_store  # CLI: imported when the command runs

    if not codec_store.is_codec_dir(path):
        return None
    return codec_store.load(path)


def load_for_export(path):
    """(config, variables) from the first EXPORT_SOURCES reader that recognises `path`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    for spec in EXPORT_SOURCES:
        module_name, fn_name = spec.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue  # this reader is not part of the installed tree
            raise
        found = getattr(module, fn_name)(path)
        if found is not None:
            return found
    raise ValueError(f"{path}: not a codec directory or a known training checkpoint")


def _codec(args):
    from secoustic_jax.api import Codec  # CLI: imported when the command runs

    return Codec.load(args.ckpt, matmul_dtype=args.precision.matmul)


def _vocoder(spec: str, conv_dtype: str = "float32"):
    try:
        from secoustic_jax.vocoder import load_vocoder  # CLI: imported when the command runs
    except ModuleNotFoundError as e:
        raise ValueError("wav output needs secoustic_jax.vocoder, which is not part of this "
                         "tree; write the mel with --out X.npy instead") from e
    return load_vocoder(spec, conv_dtype=conv_dtype)


def _conv_dtype(args) -> str:
    return args.precision.vocoder_conv


def _fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trims or zero-pads a 1-D waveform to n samples (model.md §11 waveform API)."""
    return wav[:n] if wav.shape[0] >= n else np.pad(wav, (0, n - wav.shape[0]))


def _encode_file(codec, wav_path, prompt_path=None, strict: bool = False,
                 g_bits: int = 32) -> dict:
    """wav file -> the .npz payload: tokens [T'] int32, paralinguistic [d], lengths, variant."""
    sr = codec.config.mel.sample_rate
    # Read at the file's own rate: the peak check sees the samples as stored (resampling a
    # full-scale file overshoots 1.0), and Codec.mel resamples once.
    native, source_sr = load_audio(wav_path, target_sr=None, strict=strict)
    mel = codec.mel(native, source_sr)
    tokens = codec.encode_tokens(mel)
    if prompt_path is None:
        prompt_mel = mel
    else:
        prompt, prompt_sr = load_audio(prompt_path, target_sr=None, strict=strict)
        prompt_mel = codec.mel(prompt, prompt_sr)
    num_samples = expected_length(native.shape[0], source_sr, sr)
    g = codec.prompt_embedding(prompt_mel)
    return tokens_file.payload(codec.config, tokens, g, num_frames=mel.shape[0],
                               num_samples=num_samples, source_sample_rate=source_sr,
                               g_bits=g_bits)


def _decode_payload(codec, data: dict, out: pathlib.Path, vocoder: str, official_length: bool,
                    conv_dtype: str = "float32"):
    """Decodes tokens to mel (.npy) or to a waveform (.wav) trimmed/padded to the input."""
    mel = codec.decode_tokens(data["tokens"], data["paralinguistic"])  # [hop*T', 80]
    if out.suffix == ".npy":
        if not official_length:
            mel = mel[: int(data["num_frames"])]
        with atomic_path(out, suffix=".npy") as tmp:
            np.save(tmp, mel.astype(np.float32))
        return out
    if out.suffix != ".wav":
        raise ValueError(f"{out}: output must end in .npy (mel) or .wav (waveform)")
    wav = np.asarray(_vocoder(vocoder, conv_dtype)(mel[None].astype(np.float32)))[0]
    if not official_length:
        wav = _fit_length(wav, int(data["num_samples"]))
    return save_wav(out, wav, int(data.get("sample_rate", codec.config.mel.sample_rate)))


# ---- command functions -------------------------------------------------------------------

def _import_config(args, meta: dict, sd):
    """The CodecConfig to import into: --config (a preset name, a JSON codec config or a
    configs/*.py experiment), else the config the file records (an export of this
    project), else the --variant / detected official preset; --set overrides on top, all
    applied before one validation."""
    from secoustic_jax.checkpoint.convert import (  # CLI: imported when the command runs
        detect_variant, recorded_config)

    if args.config:
        cfg = _config_arg(args.config)
    elif "codec_config" in meta:
        cfg = recorded_config(meta, str(args.input))
    elif args.set:  # a non-preset network, e.g. the golden official-tiny configuration
        cfg = codec_preset(args.variant or detect_variant(sd, str(args.input)))
    else:
        return None
    return apply_overrides(cfg, args.set)


def _config_arg(text: str):
    p = pathlib.Path(text)
    if p.suffix == ".py":
        return load_experiment(p).codec
    if p.suffix == ".json":
        from secoustic_jax.checkpoint.convert import (  # CLI: imported when the command runs
            recorded_config)
        if not p.is_file():
            raise ConfigError(f"--config {p}: no such file")
        data = json.loads(p.read_text())
        data = data.get("config", data)  # a Codec.save codec.json, or a bare CodecConfig
        return recorded_config({"codec_config": json.dumps(data)}, str(p))
    return codec_preset(text)  # ConfigError names the presets


def cmd_import_torch(args) -> int:
    from secoustic_jax.api import Codec  # CLI: imported when the command runs
    from secoustic_jax.checkpoint.torch_io import (  # CLI: imported when the command runs
        load_state_dict_with_metadata)

    t0 = time.perf_counter()
    print(f"reading {args.input} ...", file=sys.stderr, flush=True)
    sd, _, meta = load_state_dict_with_metadata(args.input, trusted=args.trusted)
    t1 = time.perf_counter()
    config = _import_config(args, meta, sd)
    if config is not None and args.variant and config.variant != args.variant:
        raise ValueError(f"--variant {args.variant} conflicts with the config's variant "
                         f"{config.variant}")
    print(f"  read {len(sd)} tensors in {t1 - t0:.1f} s; converting and checking "
          f"({'recorded' if 'codec_config' in meta and not args.config else 'given' if config else 'detected'} "
          "config) ...", file=sys.stderr, flush=True)
    codec = Codec.from_state_dict(sd, variant=args.variant, config=config)
    t2 = time.perf_counter()
    codec.save(args.out)
    print(f"  converted in {t2 - t1:.1f} s, saved in {time.perf_counter() - t2:.1f} s",
          file=sys.stderr, flush=True)
    print(f"imported {args.input} as {codec.config.variant} -> {args.out}")
    return 0


def cmd_export_torch(args) -> int:
    from secoustic_jax.checkpoint.convert import export_codec  # CLI: imported when the command runs

    cfg, variables = load_for_export(args.input)
    path = export_codec(variables, cfg, args.out)
    print(f"exported {args.input} ({cfg.variant}) -> {path}")
    return 0


def cmd_encode(args) -> int:
    codec = _codec(args)
    payload = _encode_file(codec, args.input, args.prompt, args.strict, args.g_bits)
    out = pathlib.Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: output must end in .npz")
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **payload)
    print(f"{args.input}: {payload['tokens'].shape[0]} tokens ({codec.config.variant}, "
          f"precision {args.precision}) -> {out}")
    return 0


def cmd_decode(args) -> int:
    codec = _codec(args)
    data = tokens_file.read(args.input, codec.config)
    out = _decode_payload(codec, data, pathlib.Path(args.out), args.vocoder, args.official_length,
                          _conv_dtype(args))
    print(f"{args.input} -> {out} (precision {args.precision})")
    return 0


def cmd_roundtrip(args) -> int:
    codec = _codec(args)
    out = pathlib.Path(args.out)
    if out.suffix != ".wav":
        raise ValueError(f"{out}: roundtrip writes a .wav")
    data = _encode_file(codec, args.input, args.prompt, args.strict, args.g_bits)
    data = tokens_file.decoded(data)
    _decode_payload(codec, data, out, args.vocoder, args.official_length, _conv_dtype(args))
    print(f"{args.input} -> {data['tokens'].shape[0]} tokens -> {out} (precision {args.precision})")
    return 0


def register(subparsers) -> None:
    """Adds the codec sub-commands to the `secoustic` parser."""
    p = subparsers.add_parser("import-torch", help="official .pt/.safetensors -> codec directory")
    p.add_argument("input", help="official checkpoint (.pt or .safetensors)")
    p.add_argument("--out", required=True, help="codec directory to write")
    p.add_argument("--variant", choices=["86hz", "21_5hz"], default=None,
                   help="expected variant (default: detected from the resampling kernels)")
    p.add_argument("--config", default=None, metavar="PRESET|FILE",
                   help="the network: a preset (86hz, 21_5hz, tiny, tiny_21_5hz), a JSON codec "
                        "config (e.g. a codec directory's codec.json) or a configs/*.py file; "
                        "default: the config the file records (exports of this project), "
                        "else the variant's preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override on top of that (repeatable, applied together), "
                        "e.g. transformer.num_layers=1")
    p.add_argument("--trusted", action="store_true",
                   help="allow full unpickling of a .pt holding non-tensor objects")
    p.set_defaults(func=cmd_import_torch)

    p = subparsers.add_parser("export-torch", help="codec directory -> official .pt/.safetensors")
    p.add_argument("input", help="a codec directory (Codec.save) or a training checkpoint")
    p.add_argument("--out", required=True, help="OUT.pt or OUT.safetensors")
    p.set_defaults(func=cmd_export_torch)

    for name, fn, helptext in (("encode", cmd_encode, "wav -> tokens + paralinguistic (.npz)"),
                               ("decode", cmd_decode, "tokens .npz -> mel .npy or .wav"),
                               ("roundtrip", cmd_roundtrip, "wav -> tokens -> wav")):
        p = subparsers.add_parser(name, help=helptext)
        p.add_argument("input")
        p.add_argument("--ckpt", required=True, help="codec directory (see import-torch)")
        p.add_argument("--out", required=True)
        p.add_argument("--precision", type=cli_type, default=Precision(),
                       help="precision policy: exact (default), fast (bf16 operands, float32 "
                            "accumulation: ~1.5x on AVX512_BF16 CPUs, may move a few tokens), "
                            "or a preset with overrides, e.g. exact,vocoder_conv=bfloat16 "
                            "(secoustic_jax/precision.py)")
        if name != "decode":
            p.add_argument("--prompt", default=None,
                           help="prompt wav for the paralinguistic vector (default: the input)")
            p.add_argument("--g-bits", type=int, choices=G_BITS, default=32,
                           help="precision of the paralinguistic vector G in the tokens: 32 = "
                                "float32; 8/6/4 = a float16 scale + k-bit levels "
                                "(docs/evaluation.md, G precision)")
            p.add_argument("--strict", action="store_true",
                           help="refuse a WAV cut short mid-file (default: warn, use what is there)")
        if name != "encode":
            p.add_argument("--vocoder", default="griffin-lim",
                           help="griffin-lim or a HiFT checkpoint path (for .wav output)")
            p.add_argument("--official-length", action="store_true",
                           help="keep the decoder's length instead of trimming to the input")
        p.set_defaults(func=fn)
