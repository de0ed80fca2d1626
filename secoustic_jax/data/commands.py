"""`secoustic corpus build|validate`, `secoustic ingest libritts|aishell3|textgrid|asterisk`
and `secoustic data pack|verify`.

`register(subparsers)` is called by `secoustic_jax.cli`; `python -m
secoustic_jax.data.commands ...` runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from secoustic_jax.config.data import CorpusConfig
from secoustic_jax.config.train import load_experiment
from secoustic_jax.data import report as R
from secoustic_jax.data.asterisk import SOUNDS, TRANSCRIPTS, import_asterisk
from secoustic_jax.data.corpus import build_corpus
from secoustic_jax.data.ingest import (IngestOptions, aishell3_items, ingest_items, libritts_items,
                                       textgrid_items, write_ingest)
from secoustic_jax.data.manifest import load_manifest
from secoustic_jax.data.pack import PackOptions, pack_dataset
from secoustic_jax.data.packed_source import verify_packed
from secoustic_jax.data.phones import PhoneInventory
from secoustic_jax.data.textgrid import index_textgrids


def _corpus_build(args) -> int:
    cfg = CorpusConfig(size=str(args.size), seed=args.seed, workers=args.workers,
                       voices=tuple(v for v in (args.voices or "").split(",") if v),
                       heldout_voice=args.heldout if args.heldout is not None
                       else CorpusConfig.heldout_voice)
    build_corpus(args.out, cfg)
    return 0


def _validate(args) -> int:
    bad = 0
    for path in args.manifests:
        p = pathlib.Path(path)
        inv_path = pathlib.Path(args.inventory) if args.inventory else p.parent / "phones.json"
        inv = PhoneInventory.load(inv_path) if inv_path.is_file() else None
        _, rep = load_manifest(p, require_alignment=args.stage2, inventory=inv,
                               check_files=not args.no_files)
        print(rep.summary(max_items=args.max_items))
        bad += rep.skipped
    return 1 if bad else 0


def _data_pack(args) -> int:
    mel = load_experiment(args.config).codec.mel if args.config else PackOptions().mel
    opts = PackOptions(mel=mel, mel_dtype=args.mel_dtype, waveform=args.waveform,
                       records_per_shard=args.records_per_shard,
                       require_alignment=not args.allow_unaligned, workers=args.workers)
    splits = [s for s in (args.splits or "").split(",") if s] or None
    index = pack_dataset(args.corpus, args.out, splits, opts)
    return 0 if index["totals"]["records"] else 1


def _data_verify(args) -> int:
    splits = [s for s in (args.splits or "").split(",") if s] or None
    for split, n in verify_packed(args.packed, splits).items():
        print(f"{split}: {n} records verified (sha256 of every shard, every record decoded)")
    return 0


def _register_data(subparsers) -> None:
    data = subparsers.add_parser("data", help="packed ArrayRecord datasets for training")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    pk = dsub.add_parser("pack", help="corpus splits -> sharded ArrayRecord files + index.json")
    pk.add_argument("corpus", help="corpus folder with <split>.jsonl and phones.json")
    pk.add_argument("--out", required=True, help="packed dataset folder (local)")
    pk.add_argument("--splits", default=None, help="comma-separated (default: all present)")
    pk.add_argument("--records-per-shard", type=int, default=256)
    pk.add_argument("--mel-dtype", default="float16", choices=["float16", "float32"])
    pk.add_argument("--waveform", action="store_true", help="also store int16 22.05 kHz audio")
    pk.add_argument("--allow-unaligned", action="store_true",
                    help="also pack records without phones (stage 1 only)")
    pk.add_argument("--config", default=None, help="experiment config whose codec.mel to use")
    pk.add_argument("--workers", type=int, default=2)
    pk.set_defaults(func=_data_pack)
    vf = dsub.add_parser("verify", help="hash every shard and decode every record")
    vf.add_argument("packed", help="packed dataset folder or URL")
    vf.add_argument("--splits", default=None)
    vf.set_defaults(func=_data_verify)


def _finish(out: pathlib.Path, name: str, records, rep, t0: float) -> int:
    path = write_ingest(out, name, records, rep)
    print(rep.summary())
    speakers = len({r["speaker"] for r in records})
    hours = sum(r["duration"] for r in records) / 3600
    print(f"wrote {path}: {len(records)} utterances, {hours:.3f} hours, {speakers} speakers, "
          f"{rep.skipped} skipped ({time.time() - t0:.1f} s)")
    return 0 if records else 1


def _opts(args, corpus: str, language: str):
    return IngestOptions(corpus=corpus, language=language,
                         alignments=pathlib.Path(args.alignments) if args.alignments else None,
                         require_alignment=not args.allow_unaligned, phone_set=args.phone_set,
                         keep_stress=args.keep_stress, check_audio=args.check_audio)


def _ingest_libritts(args) -> int:
    t0, out = time.time(), pathlib.Path(args.out)
    corpus = "libritts_r" if args.restored else "libritts"
    pre = R.SkipReport("layout")
    items = list(libritts_items(args.root, pre))
    recs, rep = ingest_items(items, _opts(args, corpus, "en"), out, args.name or corpus)
    return _finish(out, args.name or corpus, recs, rep.merge(pre), t0)


def _ingest_aishell3(args) -> int:
    t0, out = time.time(), pathlib.Path(args.out)
    pre = R.SkipReport("layout")
    items = list(aishell3_items(args.root, pre))
    recs, rep = ingest_items(items, _opts(args, "aishell3", "zh"), out, args.name or "aishell3")
    return _finish(out, args.name or "aishell3", recs, rep.merge(pre), t0)


def _ingest_textgrid(args) -> int:
    t0, out = time.time(), pathlib.Path(args.out)
    args.alignments = args.alignments or args.root
    grids = index_textgrids(args.alignments)
    items = list(textgrid_items(args.root, args.speaker, args.split, grids))
    recs, rep = ingest_items(items, _opts(args, args.corpus, args.language), out,
                             args.name or args.corpus)
    return _finish(out, args.name or args.corpus, recs, rep, t0)


def _ingest_asterisk(args) -> int:
    t0, out = time.time(), pathlib.Path(args.out)
    recs, rep = import_asterisk(out, args.sounds or SOUNDS, args.transcripts or TRANSCRIPTS,
                                align_phones=args.align, limit=args.limit)
    return _finish(out, args.name or "asterisk_eval", recs, rep, t0)


def _common_ingest(p: argparse.ArgumentParser, aligned: bool = True) -> None:
    p.add_argument("--out", required=True, help="folder for <name>.jsonl, phones.json, report")
    p.add_argument("--name", default=None, help="manifest file stem (default: corpus name)")
    if aligned:
        p.add_argument("--alignments", default=None, help="folder of MFA TextGrids (recursive)")
        p.add_argument("--allow-unaligned", action="store_true",
                       help="keep utterances without a TextGrid (stage 1 only)")
        p.add_argument("--phone-set", default="auto", choices=["auto", "arpabet", "ipa", "pinyin"])
        p.add_argument("--keep-stress", action="store_true", help="keep ARPAbet stress digits")
        p.add_argument("--check-audio", action="store_true",
                       help="decode every file (finds corrupt / NaN audio; slower)")


def register(subparsers) -> None:
    """Adds the `corpus`, `ingest` and `data` command groups to the `secoustic` parser."""
    corpus = subparsers.add_parser("corpus", help="embedded synthetic corpus; manifest checks")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    b = csub.add_parser("build", help="synthesise the default corpus (festival, flite, espeak, piper)")
    b.add_argument("--out", required=True)
    b.add_argument("--size", default="default", help="tiny | default | N utterances per voice")
    b.add_argument("--seed", type=int, default=20260101)
    b.add_argument("--voices", default=None, help="comma-separated voice ids (default: preset)")
    b.add_argument("--heldout", default=None, help="voice for the test_unseen split ('' = none)")
    b.add_argument("--workers", type=int, default=2)
    b.set_defaults(func=_corpus_build)
    v = csub.add_parser("validate", help="report every bad manifest line with its reason")
    v.add_argument("manifests", nargs="+")
    v.add_argument("--inventory", default=None, help="phones.json (default: beside the manifest)")
    v.add_argument("--stage2", action="store_true", help="require phones and durations")
    v.add_argument("--no-files", action="store_true", help="do not check that audio files exist")
    v.add_argument("--max-items", type=int, default=50)
    v.set_defaults(func=_validate)

    ingest = subparsers.add_parser("ingest", help="convert a corpus layout to a manifest")
    isub = ingest.add_subparsers(dest="ingest_command", required=True, metavar="FORMAT")
    lt = isub.add_parser("libritts", help="LibriTTS / LibriTTS-R tree (+ MFA TextGrids)")
    lt.add_argument("root")
    lt.add_argument("--restored", action="store_true", help="LibriTTS-R (corpus libritts_r)")
    _common_ingest(lt)
    lt.set_defaults(func=_ingest_libritts)
    ai = isub.add_parser("aishell3", help="AISHELL-3 tree (+ MFA TextGrids)")
    ai.add_argument("root")
    _common_ingest(ai)
    ai.set_defaults(func=_ingest_aishell3)
    tg = isub.add_parser("textgrid", help="generic audio files + TextGrids paired by stem")
    tg.add_argument("root", help="audio folder (recursive)")
    tg.add_argument("--corpus", required=True)
    tg.add_argument("--language", default="en")
    tg.add_argument("--speaker", default="parent", help="'parent' (folder name) or a fixed name")
    tg.add_argument("--split", default="train", choices=["train", "valid", "test"])
    _common_ingest(tg)
    tg.set_defaults(func=_ingest_textgrid)
    ast = isub.add_parser("asterisk", help="English Asterisk prompts (G.722) -> eval manifest")
    ast.add_argument("--sounds", default=None)
    ast.add_argument("--transcripts", default=None)
    ast.add_argument("--align", action="store_true", help="pocketsphinx phone alignment")
    ast.add_argument("--limit", type=int, default=None)
    _common_ingest(ast, aligned=False)
    ast.set_defaults(func=_ingest_asterisk)
    _register_data(subparsers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="secoustic-data", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
