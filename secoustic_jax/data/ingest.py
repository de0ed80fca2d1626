"""Ingest real corpora into manifests: LibriTTS / LibriTTS-R, AISHELL-3, audio + TextGrid pairs.

Each ingester walks its layout (data.md §4), pairs audio with text and (optionally) MFA
TextGrids, converts alignments to mel-frame durations, and returns records plus a
SkipReport. `write_ingest` writes `<name>.jsonl` with audio paths relative to the
manifest, extends `phones.json` beside it (existing IDs kept) and a report file.
Nothing unexpected passes silently: every dropped utterance has a kind and a reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re

from secoustic_jax.audio.io import AudioError, audio_info, load_audio
from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.phones import PhoneError, PhoneInventory
from secoustic_jax.data.textgrid import (TextGridError, guess_phone_set, index_textgrids,
                                         read_intervals, to_durations)

AUDIO_EXTS = (".wav", ".flac", ".ogg")
_LIBRITTS_ID = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)$")
_AISHELL_ID = re.compile(r"^(SSB\d{4})\d{4}$")


@dataclasses.dataclass
class Item:
    """One utterance found in a layout, before audio and alignment checks."""

    utt: str
    audio: pathlib.Path
    speaker: str
    text: str | None
    split: str
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class IngestOptions:
    """How items become records. alignments: folder of TextGrids (None: stage-1 only)."""

    corpus: str
    language: str
    alignments: pathlib.Path | None = None
    require_alignment: bool = True
    phone_set: str = "auto"  # auto | arpabet | ipa | pinyin
    keep_stress: bool = False
    check_audio: bool = False  # decode every file (finds NaN / corrupt data), slower


def _record(item: Item, opts: IngestOptions, grids: dict, out_dir: pathlib.Path,
            rep: R.SkipReport) -> dict | None:
    """Item -> manifest record, or None with the reason recorded in `rep`."""
    uid = f"{opts.corpus}:{item.utt}"
    try:
        sr, n = audio_info(item.audio)
        if n <= 0:
            raise AudioError(f"{item.audio}: empty audio")
        if opts.check_audio:
            load_audio(item.audio, target_sr=None)
    except AudioError as e:
        kind = R.NAN_AUDIO if "NaN" in str(e) else (
            R.EMPTY_AUDIO if "empty" in str(e) else R.UNREADABLE_AUDIO)
        rep.skip(uid, kind, str(e))
        return None
    if not item.text:
        rep.skip(uid, R.MISSING_TEXT, f"no transcript for {item.audio.name}")
        return None
    fields = {}
    grid = grids.get(item.utt)
    if grid is None and opts.alignments is not None and opts.require_alignment:
        rep.skip(uid, R.MISSING_ALIGNMENT, f"no TextGrid {item.utt}.TextGrid under {opts.alignments}")
        return None
    if grid is not None:
        try:
            intervals, _ = read_intervals(grid)
            pset = opts.phone_set if opts.phone_set != "auto" else guess_phone_set(
                [lab for _, _, lab in intervals])
            phones, durs = to_durations(intervals, align.frames_for(n, sr), pset, opts.keep_stress)
        except TextGridError as e:
            rep.skip(uid, R.BAD_ALIGNMENT, str(e))
            return None
        except PhoneError as e:
            rep.skip(uid, R.UNKNOWN_PHONES, f"{grid.name}: {e}")
            return None
        fields = dict(phone_set=pset, phones=phones, durations=durs)
        item.extra["alignment"] = os.path.relpath(grid, out_dir)
    rec = manifest.make_record(
        id=uid, corpus=opts.corpus, audio=os.path.relpath(item.audio, out_dir), sample_rate=sr,
        num_samples=n, speaker=f"{opts.corpus}:{item.speaker}", language=opts.language,
        text=item.text, split=item.split, extra=item.extra or None, **fields)
    problems = manifest.validate_record(rec, require_alignment=bool(grid) and opts.require_alignment)
    if problems:
        rep.skip(uid, problems[0][0], "; ".join(w for _, w in problems))
        return None
    rep.keep(rec["duration"])
    return rec


def ingest_items(items, opts: IngestOptions, out_dir, name: str | None = None
                 ) -> tuple[list[dict], R.SkipReport]:
    """Items -> (records, report). Duplicate utterance ids are skipped after the first."""
    out_dir = pathlib.Path(out_dir).resolve()
    rep = R.SkipReport(f"ingest {name or opts.corpus}")
    if opts.alignments is not None and not pathlib.Path(opts.alignments).is_dir():
        raise FileNotFoundError(f"alignment folder {opts.alignments} not found")
    grids = index_textgrids(opts.alignments) if opts.alignments is not None else {}
    records, seen = [], set()
    for item in items:
        if item.utt in seen:
            rep.skip(f"{opts.corpus}:{item.utt}", R.DUPLICATE_ID, f"second copy at {item.audio}")
            continue
        seen.add(item.utt)
        rec = _record(item, opts, grids, out_dir, rep)
        if rec is not None:
            records.append(rec)
    return records, rep


def _audio_files(root: pathlib.Path):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())


def libritts_items(root, rep: R.SkipReport | None = None):
    """LibriTTS(-R) layout `<subset>/<spk>/<chap>/<spk>_<chap>_<para>_<sent>.wav` -> Items.

    Text from `<utt>.normalized.txt`, else the chapter's `.trans.tsv` (normalised column).
    Split from the subset name: train-* -> train, dev-* -> valid, test-* -> test.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriTTS root {root} not found")
    tsv_cache: dict[pathlib.Path, dict[str, str]] = {}
    for wav in _audio_files(root):
        m = _LIBRITTS_ID.match(wav.stem)
        if not m:
            if rep is not None:
                rep.skip(str(wav), R.BAD_RECORD, "file name is not <spk>_<chap>_<para>_<sent>")
            continue
        subset = next((p for p in wav.relative_to(root).parts if re.match(r"(train|dev|test)-", p)),
                      root.name)
        split = {"train": "train", "dev": "valid", "test": "test"}.get(subset.split("-")[0], "train")
        txt = wav.with_name(wav.stem + ".normalized.txt")
        text = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
        if text is None:
            tsv = wav.parent / f"{m.group(1)}_{m.group(2)}.trans.tsv"
            if tsv not in tsv_cache:
                tsv_cache[tsv] = _read_trans_tsv(tsv)
            text = tsv_cache[tsv].get(wav.stem)
        yield Item(wav.stem, wav, m.group(1), text, split, {"subset": subset})


def _read_trans_tsv(path: pathlib.Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out[parts[0]] = parts[2].strip()
    return out


def read_aishell_content(path) -> dict[str, tuple[str, list[str]]]:
    """AISHELL-3 `content.txt`: `<file>.wav<ws>字 pin1 字 pin2 ...` -> {utt: (text, pinyin)}."""
    out = {}
    for no, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, _, rest = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        toks = rest.split()
        if not name.endswith(".wav") or len(toks) % 2:
            raise ValueError(f"{path}:{no}: expected '<file>.wav' then character/pinyin pairs")
        out[name[:-4]] = ("".join(toks[0::2]), toks[1::2])
    return out


def aishell3_items(root, rep: R.SkipReport | None = None):
    """AISHELL-3 `{train,test}/wav/<SPK>/<SPK><UTT>.wav` + `{train,test}/content.txt` -> Items."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AISHELL-3 root {root} not found")
    found = False
    for part in ("train", "test"):
        if not (root / part / "wav").is_dir():
            continue
        found = True
        content_p = root / part / "content.txt"
        content = read_aishell_content(content_p) if content_p.is_file() else {}
        for wav in _audio_files(root / part / "wav"):
            m = _AISHELL_ID.match(wav.stem)
            if not m:
                if rep is not None:
                    rep.skip(str(wav), R.BAD_RECORD, "file name is not <SPK><UTT> (SSB00050001)")
                continue
            text, pinyin = content.get(wav.stem, (None, []))
            yield Item(wav.stem, wav, m.group(1), text, part, {"pinyin": " ".join(pinyin)})
    if not found:
        raise FileNotFoundError(f"{root}: no train/wav or test/wav folder (AISHELL-3 layout)")


def textgrid_items(audio_root, speaker: str = "parent", split: str = "train",
                   text_from_grids: dict | None = None):
    """Generic audio files -> Items. speaker: 'parent' (folder name) or a fixed name.

    Text from a sidecar `<stem>.txt` / `.lab`, else the TextGrid words tier.
    """
    root = pathlib.Path(audio_root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} not found")
    for wav in _audio_files(root):
        text = None
        for ext in (".txt", ".lab", ".normalized.txt"):
            side = wav.with_name(wav.stem + ext)
            if side.is_file():
                text = side.read_text(encoding="utf-8").strip()
                break
        if text is None and text_from_grids and wav.stem in text_from_grids:
            try:
                text = read_intervals(text_from_grids[wav.stem])[1] or None
            except TextGridError:
                text = None  # the alignment step reports the unreadable grid
        spk = wav.parent.name if speaker == "parent" else speaker
        yield Item(wav.stem, wav, spk, text, split)


def write_ingest(out_dir, name: str, records: list[dict], rep: R.SkipReport) -> pathlib.Path:
    """Writes `<name>.jsonl`, extends `phones.json` and writes `<name>.report.json`."""
    out = pathlib.Path(out_dir)
    path = manifest.write_manifest(out / f"{name}.jsonl", records)
    inv_path = out / "phones.json"
    phones = {p for r in records for p in r.get("phones") or ()}
    inv = PhoneInventory.load(inv_path).extended(phones) if inv_path.is_file() else PhoneInventory(
        sorted(phones))
    inv.save(inv_path)
    (out / f"{name}.report.json").write_text(json.dumps(rep.to_dict(), indent=1,
                                                        ensure_ascii=False), encoding="utf-8")
    return path
