"""Turns scored outputs into report records and writes the evaluation folder.

Record format (stats.py): {"set", "condition", "utt_id", "metrics", "failures", ...} with
extras text / hyp / hyp_orig / lengths. Conditions: voc, acoustic, token, vc. Corpus
values per condition: the §4.5 WER family; "original" holds set-level context (ASR of
the originals, cross-speaker similarity floor); "vc" the §5 context values.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import soundfile as sf

from secoustic_jax.atomic import write_text
from secoustic_jax.eval import codebook as cb, metrics, report, report_plots, vc as vcmod
from secoustic_jax.eval.asr import utterance_wer, wer_report
from secoustic_jax.eval.speaker import cosine
from secoustic_jax.quantizer.g_quant import bits_per_vector

GL_WARNING = ("Griffin-Lim (the weight-free fallback) measures a different, weaker system: "
              "never compare these numbers with HiFT numbers or with the paper (evaluation.md §2.3).")
READING = ("Conditions: `voc` = ground-truth mel through the vocoder alone (the vocoder ceiling); "
           "`acoustic` = the stage-1 path vocode(decode_acoustic(A(x))); `token` = the codec, "
           "vocode(decode_tokens(tokens(x), G(x))); `vc` = tokens of one speaker decoded with "
           "another speaker's G. `mel_l1`/`mel_l2` compare the decoded mel with the input mel "
           "(no vocoder); `audio_mel_*` apply the front end to the vocoded output.")


@dataclasses.dataclass
class SetResult:
    name: str
    records: list[dict]
    corpus: dict
    codebook: dict
    token_counts: dict
    probe: dict | None
    mel_pairs: dict
    audio: list[tuple[str, str, np.ndarray, int]]  # (utt_id, label, wav, sr)
    first_g: np.ndarray
    notes: list[str]


def _record(ts, i: int, cond: str, s, ref, sim: bool) -> dict:
    """One per-utterance record of condition `cond` from its Scored `s` and the Scored
    of the original (`ref`: ASR transcript and speaker embedding of the input)."""
    u = ts.utterances[i]
    m, fails = dict(s.metrics), dict(s.failures)
    if sim:
        if ref is not None and ref.embedding is not None and s.embedding is not None:
            m["spk_sim"] = cosine(ref.embedding, s.embedding)
        else:
            m["spk_sim"] = float("nan")
            fails["spk_sim"] = fails.get("spk_sim") or (ref.failures.get("spk_sim") if ref else None) \
                or "no speaker embedding"
    rec = {"set": ts.name, "condition": cond, "utt_id": u.utt_id, "metrics": m, "failures": fails,
           "num_samples": u.num_samples, "speaker": u.speaker}
    if u.text is not None:
        rec["text"] = u.text
    if s.hyp is not None:
        rec["hyp"] = s.hyp
        if u.text and u.wer_usable:
            m["wer"] = utterance_wer(u.text, s.hyp)
    if ref is not None and ref.hyp is not None:
        rec["hyp_orig"] = ref.hyp
    return rec


def _codec_metrics(cond: str, out, cfg, duration: float, g_bits: int = 32) -> dict:
    """Codec-domain mel distances (§4.4) and, for the token path, side information (§4.8):
    G at the evaluated precision, and the total rate tokens + G."""
    dec = {"acoustic": out.mel_acoustic, "token": out.mel_token}.get(cond)
    m = {} if dec is None else metrics.mel_distances(out.mel, dec)
    if cond == "token":
        bits = bits_per_vector(out.g.shape[-1], g_bits)
        m["side_info_bps"] = cb.side_info(duration, bits)["side_info_bps"]
        m["total_bps"] = cb.nominal_bitrate(cfg.hop, cfg.codebook_size) + m["side_info_bps"]
        m["num_tokens"] = float(out.tokens.shape[0])
    return m


def _mos_only(d: dict) -> dict:
    """The DNSMOS entries of a metrics or failures dict."""
    return {k: v for k, v in d.items() if k.startswith("dnsmos_")}


def _original_records(ts, refs: dict) -> list[dict]:
    """Condition "original": the input audio's own non-intrusive scores (DNSMOS), the
    reference point of every other condition's."""
    out = []
    for i, s in sorted(refs.items()):
        m = _mos_only(s.metrics)
        if not m:
            continue
        u = ts.utterances[i]
        out.append({"set": ts.name, "condition": "original", "utt_id": u.utt_id, "metrics": m,
                    "failures": _mos_only(s.failures),
                    "num_samples": u.num_samples, "speaker": u.speaker})
    return out


def _wer_corpus(ts, recs: list[dict], refs: dict) -> dict | None:
    """The §4.5 WER family over utterances with a transcript usable for WER."""
    rows = [(ts.utterances[i].text, refs[i].hyp, r["hyp"]) for i, r in recs
            if ts.utterances[i].text and ts.utterances[i].wer_usable and "hyp" in r
            and refs.get(i) is not None and refs[i].hyp is not None]
    if not rows:
        return None
    return wer_report(*map(list, zip(*rows)))


def _vc_part(ts, plan, scored, refs, corpus: dict, audio: list) -> list[dict]:
    """vc records (sim_tgt, sim_src, success, floor, wer), corpus["vc"], kept VC audio."""
    recs, rows = [], []
    for n, pair in enumerate(plan.pairs):
        s, src, prm = scored[("vc", n)], refs.get(pair.source), refs.get(pair.prompt)
        u = ts.utterances[pair.source]
        # DNSMOS is non-intrusive: it scores the converted audio on its own.
        m = _mos_only(s.metrics)
        fails = dict(s.failures)
        if s.embedding is not None and src is not None and src.embedding is not None \
                and prm is not None and prm.embedding is not None:
            m.update(vcmod.vc_metrics(s.embedding, src.embedding, prm.embedding))
        else:
            fails["sim_tgt"] = fails.get("spk_sim", "missing embedding")
        rec = {"set": ts.name, "condition": "vc", "utt_id": vcmod.pair_id(ts.utterances, pair),
               "metrics": m, "failures": fails, "source": u.utt_id, "target_speaker": pair.target,
               "prompt": ts.utterances[pair.prompt].utt_id, "num_samples": u.num_samples}
        if s.hyp is not None:
            rec["hyp"] = s.hyp
            if u.text and u.wer_usable and src is not None and src.hyp is not None:
                m["wer"] = utterance_wer(u.text, s.hyp)
                rows.append((u.text, src.hyp, s.hyp))
        recs.append(rec)
        if s.wav is not None:
            audio.append((rec["utt_id"], "vc", s.wav, 22050))
    embs = {i: r.embedding for i, r in refs.items() if r.embedding is not None}
    entry = {"pairs": len(plan.pairs), "speakers": len(plan.prompts),
             "ceiling_same_speaker_sim": vcmod.ceiling(plan, embs)}
    succ = [r["metrics"]["vc_success"] for r in recs if "vc_success" in r["metrics"]]
    entry["success_rate"] = float(np.mean(succ)) if succ else None
    if rows:
        w = wer_report(*map(list, zip(*rows)))
        entry.update(wer=w["wer"], wer_orig=w["wer_orig"], wer_delta=w["wer_delta"])
    corpus["vc"] = entry
    return recs


def assemble_set(ts, cfg, outputs, scored: dict, opts, *, plan=None, probe=None,
                 probe_notes=(), sample_indices=()) -> SetResult:
    """Records, corpus WER, codebook statistics, mel pairs and audio for one set."""
    refs = {k[1]: v for k, v in scored.items() if k[0] == "ref"}
    records, corpus, mel_pairs, audio = [], {}, {}, []
    for cond in opts.conditions:
        recs = []
        for i, o in enumerate(outputs):
            s = scored[(cond, i)]
            rec = _record(ts, i, cond, s, refs.get(i), opts.sim)
            rec["metrics"].update(_codec_metrics(cond, o, cfg, ts.utterances[i].duration,
                                                 opts.g_bits))
            recs.append((i, rec))
            if cond in ("acoustic", "token"):
                dec = o.mel_acoustic if cond == "acoustic" else o.mel_token
                mel_pairs[(ts.name, cond, ts.utterances[i].utt_id)] = (o.mel, dec)
            if s.wav is not None:
                audio.append((ts.utterances[i].utt_id, cond, s.wav, 22050))
        wer = _wer_corpus(ts, recs, refs) if opts.asr else None
        if wer is not None:
            corpus[cond] = wer
        records += [r for _, r in recs]
    records += _original_records(ts, refs)
    for i in sample_indices:
        audio.insert(0, (ts.utterances[i].utt_id, "original", ts.utterances[i].wav, 22050))
    embs = {i: r.embedding for i, r in refs.items() if r.embedding is not None}
    orig = {"utterances": len(ts), "hours": sum(u.duration for u in ts.utterances) / 3600,
            "speakers": len({u.group for u in ts.utterances if u.group}),
            "scaled_down": sum(u.scale is not None for u in ts.utterances),
            "skipped_at_load": len(ts.skipped)}
    if ts.multi_speaker and embs:
        orig["cross_speaker_sim_floor"] = vcmod.cross_speaker_floor(ts.utterances, embs)
    corpus["original"] = orig
    if plan is not None:
        records += _vc_part(ts, plan, scored, refs, corpus, audio)
    book, counts = {}, {}
    if "token" in opts.conditions:
        toks = [o.tokens for o in outputs]
        book["token"] = cb.codebook_stats(toks, hop_factor=cfg.hop, num_codes=cfg.codebook_size)
        book["token"].update(cb.total_bitrates(cfg.hop, outputs[0].g.shape[-1], opts.g_bits,
                                               [u.duration for u in ts.utterances],
                                               cfg.codebook_size))
        counts[(ts.name, "token")] = cb.token_counts(toks, cfg.codebook_size)
    notes = list(probe_notes) + [f"{ts.name}: {n}" for n in (plan.notes if plan is not None else [])]
    return SetResult(ts.name, records, corpus, book, counts, probe, mel_pairs, audio,
                     outputs[0].g, notes)


def _write_audio(out: pathlib.Path, items) -> list[dict]:
    """FLAC clips under out/audio/ (PCM_16; small, and not caught by *.wav ignores)."""
    entries = []
    for set_name, (utt_id, label, wav, sr) in items:
        path = out / "audio" / f"{report_plots.safe_name(set_name, utt_id, label)}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.clip(np.asarray(wav, np.float32), -1.0, 1.0)
        sf.write(str(path), x, sr, subtype="PCM_16", format="FLAC")
        entries.append({"utt_id": f"{set_name}/{utt_id}", "label": label, "path": str(path)})
    return entries


def _speed_md(timing: dict) -> list[str]:
    lines = ["## Speed (evaluation.md §4.9-4.10; wall-clock, not reproducible)", "",
             f"Device {timing['device']}, {timing['cpu_count']} CPUs, vocoder {timing['vocoder']}, "
             f"10 s input, batch 1, median of {timing['input']['repeats']} runs after a warm-up.", "",
             "| stage | median ms | min ms | max ms | RTF | first call s |", "|---|---|---|---|---|---|"]
    for name, t in timing["rtf"].items():
        lines.append(f"| {name} | {1e3 * t['median_s']:.1f} | {1e3 * t['min_s']:.1f} | "
                     f"{1e3 * t['max_s']:.1f} | {t['rtf']:.4f} | {t['compile_s']:.2f} |")
    lat = timing["latency"]
    comp = lat["compute"]
    lines += ["", f"- algorithmic latency: {lat['algorithmic']['samples']} samples = "
                  f"{lat['algorithmic']['ms']:.1f} ms",
              f"- first-frame compute latency: {comp['first_frame_ms']:.2f} ms (min {comp['min_ms']:.2f}, "
              f"token period {comp['token_period_ms']:.2f} ms; {comp['method']})",
              _streaming_line(lat["streaming"]), ""]
    return lines


def _streaming_line(st: dict) -> str:
    if st.get("status") != "measured":
        return f"- streaming: {st.get('status')}"
    return (f"- streaming (secoustic_jax.streaming, batch 1): first step {st['first_frame_ms']:.2f} ms; "
            f"steady state {st['step_median_ms']:.2f} ms median, p90 {st['step_p90_ms']:.2f} ms per "
            f"{st['token_period_ms']:.2f} ms token (step RTF {st['step_rtf']:.3f}, "
            f"{'real time' if st['real_time'] else 'not real time'})")


def _finish_md(paths: dict, header: dict, timing: dict | None, notes: list[str]) -> None:
    lines = ["## Reading the tables", "", READING, ""]
    if str(header.get("vocoder", "")).startswith("griffin-lim"):
        lines += [f"**{GL_WARNING}**", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if timing is not None:
        lines += _speed_md(timing)
    md = paths["md"].read_text(encoding="utf-8")
    marker = "## Results"
    md = md.replace(marker, "\n".join(lines) + "\n" + marker, 1) if marker in md else md + "\n".join(lines)
    write_text(paths["md"], md)


def write_outputs(out_dir, header: dict, results: list[SetResult], timing: dict | None) -> dict:
    """report.json/.md (+ plots, audio) via eval.report, then the timing section,
    summary.json and per_utterance.jsonl (the §7 names)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for res in results for r in res.records]
    merge = lambda attr: {k: v for res in results for k, v in (getattr(res, attr) or {}).items()}  # noqa: E731
    corpus = {res.name: res.corpus for res in results}
    codebook = {res.name: res.codebook for res in results if res.codebook}
    audio = _write_audio(out, [(res.name, a) for res in results for a in res.audio])
    paths = report.write_report(out, header, records, corpus=corpus, codebook=codebook,
                                token_counts=merge("token_counts"), probe=merge("probe") or None,
                                mel_pairs=merge("mel_pairs"), audio=audio)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    data["timing"] = report.to_jsonable(timing)
    data["notes"] = [n for res in results for n in res.notes]
    write_text(paths["json"], json.dumps(data, indent=1, sort_keys=True, allow_nan=False,
                                                 ensure_ascii=False) + "\n")
    _finish_md(paths, header, timing, data["notes"])
    summary = {k: data[k] for k in ("header", "summary", "probe", "timing", "notes")}
    paths["summary"] = out / "summary.json"
    write_text(paths["summary"], json.dumps(summary, indent=1, sort_keys=True) + "\n")
    paths["per_utterance"] = out / "per_utterance.jsonl"
    write_text(paths["per_utterance"], "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in data["utterances"]))
    return {"paths": paths, "report": data}

