"""Import the English Asterisk prompts (real speech, evaluation only; data.md §6).

Raw G.722 files (64 kbit/s -> 16 kHz 16-bit mono) are decoded with a **new decoder per
file** (the decoder is stateful: reuse corrupts the next file's start), written as 16 kHz
PCM_16 WAV under `out/wavs/`, and listed in an eval manifest with the transcripts from
`core-sounds-en.txt.gz` (bracketed stage notes stripped). Non-speech prompts (transcript
entirely in brackets) are skipped as `non_speech`. Optional pocketsphinx forced
alignment adds ARPAbet phones and durations (data.md §6.1).
"""

from __future__ import annotations

import gzip
import pathlib
import re

import numpy as np

from secoustic_jax.audio.io import AudioError, prepare_waveform, save_wav
from secoustic_jax.data import align, manifest, report as R
from secoustic_jax.data.phones import PhoneError, normalise
from secoustic_jax.data.text_norm import normalize_text  # §4.5; the evaluator's WER uses it too

SOUNDS = pathlib.Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = pathlib.Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
_BRACKETS = re.compile(r"\[[^\]]*\]")


def read_transcripts(path=TRANSCRIPTS) -> dict[str, str]:
    """`name: text` lines (first line a `;` comment) -> {name: raw text}."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: apt-get install asterisk-core-sounds-en")
    opener = gzip.open if p.suffix == ".gz" else open
    out = {}
    with opener(p, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, _, text = line.partition(":")
            out[name.strip()] = text.strip()
    return out


def spoken_text(raw: str) -> str:
    """Strips bracketed stage notes and collapses spaces ('' for non-speech prompts)."""
    return " ".join(_BRACKETS.sub(" ", raw).split())


def decode_g722(path) -> np.ndarray:
    """Raw G.722 file -> float32 [N] at 16 kHz (fresh decoder for every file)."""
    import G722  # optional: g722 (eval extra)

    data = pathlib.Path(path).read_bytes()
    if not data:
        raise AudioError(f"{path}: empty G.722 file")
    pcm = np.asarray(G722.G722(16000, 64000).decode(data), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def pocketsphinx_align(wav16: np.ndarray, text: str) -> tuple[list[str], list[int], list[int]]:
    """Two-pass forced alignment -> (ARPAbet phones, starts, lengths) in 10 ms frames.

    Raises RuntimeError when a word is missing from the dictionary (the caller skips).
    """
    from pocketsphinx import Decoder  # optional: pocketsphinx (eval extra)

    words = re.sub(r"[^a-z' ]", " ", normalize_text(text).lower()).split()
    if not words:
        raise RuntimeError("no words to align")
    pcm = (np.clip(wav16, -1, 1) * 32767).astype(np.int16).tobytes()
    dec = Decoder(samprate=16000, loglevel="FATAL", bestpath=False)
    dec.set_align_text(" ".join(words))
    for second in (False, True):
        if second:
            dec.set_alignment()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
    phones, starts, lengths = [], [], []
    for word in dec.get_alignment():
        for p in word:
            phones.append(p.name)
            starts.append(int(p.start))
            lengths.append(int(p.duration))
    return phones, starts, lengths


def import_asterisk(out_dir, sounds=SOUNDS, transcripts=TRANSCRIPTS, *, align_phones=False,
                    limit: int | None = None) -> tuple[list[dict], R.SkipReport]:
    """Decodes every `*.g722` under `sounds` -> (eval records, report). Split is `test`."""
    out, sounds = pathlib.Path(out_dir), pathlib.Path(sounds)
    if not sounds.is_dir():
        raise FileNotFoundError(f"{sounds} not found: apt-get install asterisk-core-sounds-en-g722")
    texts = read_transcripts(transcripts)
    rep = R.SkipReport("ingest asterisk")
    records = []
    files = sorted(sounds.rglob("*.g722"))[:limit]
    for f in files:
        name = f.relative_to(sounds).with_suffix("").as_posix()
        uid = f"asterisk:{name}"
        if name not in texts:
            rep.skip(uid, R.MISSING_TEXT, f"no transcript line for {name!r}")
            continue
        text = spoken_text(texts[name])
        if not text:
            rep.skip(uid, R.NON_SPEECH, f"transcript is only stage notes: {texts[name]!r}")
            continue
        try:
            wav = prepare_waveform(decode_g722(f), 16000, target_sr=None, path=f)
        except (AudioError, ValueError) as e:
            rep.skip(uid, R.UNREADABLE_AUDIO, str(e))
            continue
        rel = pathlib.Path("wavs") / f"{name}.wav"
        save_wav(out / rel, wav, 16000)
        fields, extra = {}, {"source": str(f), "raw_text": texts[name], "wer_usable": True}
        if align_phones:
            fields, flag = _alignment_fields(wav, text, uid, rep)
            if flag:
                extra["alignment_flag"] = flag
        rec = manifest.make_record(id=uid, corpus="asterisk", audio=rel.as_posix(),
                                   sample_rate=16000, num_samples=len(wav),
                                   speaker="asterisk:allison", language="en", text=text,
                                   split="test", extra=extra, **fields)
        records.append(rec)
        rep.keep(rec["duration"])
    return records, rep


def _alignment_fields(wav: np.ndarray, text: str, uid: str, rep: R.SkipReport
                      ) -> tuple[dict, str | None]:
    """pocketsphinx phones for one prompt; failures are counted but keep the eval record."""
    try:
        raw, starts, lengths = pocketsphinx_align(wav, text)
        phones, _ = normalise(raw, [0] * len(raw), "arpabet")
    except (RuntimeError, PhoneError) as e:
        rep.note("alignment_failed")
        return {}, f"alignment failed: {e}"
    total = align.frames_for(len(wav), 16000)
    end_s = (starts[-1] + lengths[-1]) * 0.01 if starts else 0.0
    flag = None
    if abs(end_s - len(wav) / 16000) > 0.05:  # transcript and audio may disagree
        flag = f"alignment ends at {end_s:.2f} s, audio lasts {len(wav) / 16000:.2f} s"
    phones, durs = align.durations_from_10ms(phones, starts, lengths, total)
    return {"phone_set": "arpabet", "phones": phones, "durations": durs}, flag
