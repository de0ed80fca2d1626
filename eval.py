"""Evaluate a SecoustiCodec checkpoint (evaluation.md): report.json + report.md + plots + audio.

    python eval.py --ckpt runs/tiny --manifest cache/corpus/test.jsonl --out reports/tiny
    python eval.py --ckpt secousticodec_86_hz.pt --variant 86hz --vocoder hift.pt \\
        --manifest E1=cache/asterisk/asterisk.jsonl --manifest E2=cache/corpus/test.jsonl --out reports/86hz
    python eval.py --ckpt ckpt/86hz --audio-dir my_wavs/ --skip-asr --out reports/mine

--ckpt: a Codec.save directory, a training workdir (latest checkpoint) or an official
.pt/.safetensors (with --variant to force the preset). --manifest may repeat, as PATH
(set named after the file) or NAME=PATH. The same command twice writes the same
report.json numbers; only the `timing` section (wall clock) differs (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from secoustic_jax.quantizer.g_quant import G_BITS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="codec directory, training workdir, or official .pt/.safetensors")
    p.add_argument("--variant", default=None, choices=("86hz", "21_5hz"), help="preset of an official file")
    p.add_argument("--step", type=int, default=None, help="training checkpoint step (default: latest)")
    src = p.add_argument_group("test data (at least one)")
    src.add_argument("--manifest", action="append", default=[], metavar="[NAME=]PATH",
                     help="JSON-lines manifest (data.md §1); repeatable")
    src.add_argument("--audio-dir", action="append", default=[], metavar="[NAME=]DIR",
                     help="folder of audio files (no transcripts: no WER); repeatable")
    p.add_argument("--split", default=None, help="keep only manifest records of this split")
    p.add_argument("--min-seconds", type=float, default=0.0, help="drop shorter utterances")
    p.add_argument("--vocoder", default="griffin-lim", help="griffin-lim (fallback) or a hift.pt / saved vocoder dir")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="first N utterances per test set")
    p.add_argument("--per-speaker", type=int, default=None,
                   help="first N utterances of each speaker per manifest (as the demo's E2)")
    p.add_argument("--seed", type=int, default=0, help="vocoder PRNG seed (recorded)")
    p.add_argument("--skip-asr", action="store_true", help="no Whisper transcripts / WER")
    p.add_argument("--skip-sim", action="store_true", help="no speaker similarity (and no VC)")
    p.add_argument("--skip-vc", action="store_true", help="no voice conversion")
    p.add_argument("--skip-probe", action="store_true", help="no disentanglement probe")
    p.add_argument("--skip-timing", action="store_true", help="no RTF / latency section")
    p.add_argument("--skip-mos", action="store_true", help="no DNSMOS (speechmos) scores")
    p.add_argument("--g-bits", type=int, default=32, choices=G_BITS,
                   help="decode with G quantised to this precision, as a tokens file carries it")
    p.add_argument("--vc-sources", type=int, default=10, help="source utterances per speaker pair (K)")
    p.add_argument("--vc-max-pairs", type=int, default=None, help="cap on ordered speaker pairs")
    p.add_argument("--conditions", default="voc,acoustic,token", help="comma list of voc,acoustic,token")
    p.add_argument("--batch", type=int, default=8, help="max utterances per codec batch")
    p.add_argument("--workers", type=int, default=0, help="scoring processes (0 = in-process)")
    p.add_argument("--audio-samples", type=int, default=1, help="utterances per set saved as audio")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _named(spec: str) -> tuple[str | None, str]:
    name, sep, path = spec.partition("=")
    return (name, path) if sep and name and not pathlib.Path(spec).exists() else (None, spec)


def load_sets(args) -> list:
    from secoustic_jax.eval.testset import from_audio_dir, from_manifest

    if args.per_speaker is not None and args.per_speaker < 1:
        raise ValueError(f"--per-speaker must be >= 1, got {args.per_speaker}")
    sets = []
    for spec in args.manifest:
        name, path = _named(spec)
        sets.append(from_manifest(path, name, limit=args.limit, split=args.split,
                                  min_seconds=args.min_seconds, per_speaker=args.per_speaker))
    for spec in args.audio_dir:
        name, path = _named(spec)
        sets.append(from_audio_dir(path, name, limit=args.limit))
    if not sets:
        raise ValueError("give at least one --manifest or --audio-dir")
    return sets


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        from secoustic_jax.eval.checkpoints import load_codec
        from secoustic_jax.eval.evaluate import EvalOptions, evaluate
        from secoustic_jax.vocoder import load_vocoder

        opts = EvalOptions(conditions=tuple(c for c in args.conditions.split(",") if c),
                           asr=not args.skip_asr, sim=not args.skip_sim, vc=not args.skip_vc,
                           probe=not args.skip_probe, vc_sources=args.vc_sources,
                           vc_max_pairs=args.vc_max_pairs, seed=args.seed, max_batch=args.batch,
                           workers=args.workers, audio_samples=args.audio_samples,
                           timing=not args.skip_timing, progress=not args.no_progress,
                           mos=not args.skip_mos, g_bits=args.g_bits)
        opts.validate()
        codec, entry = load_codec(args.ckpt, args.variant, step=args.step)
        vocoder = load_vocoder(args.vocoder)
        sets = load_sets(args)
        extra = {}
        if pathlib.Path(args.vocoder).exists():  # evaluation.md §7: the HiFT file's sha256
            from secoustic_jax.eval.evaluate import checkpoint_entry

            extra["vocoder_file"] = checkpoint_entry(args.vocoder, "vocoder")
        result = evaluate(codec, vocoder, sets, args.out, opts, checkpoint=entry, header_extra=extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    for key, path in result["paths"].items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
