"""Speaker probes that can see disentanglement (docs/evaluation.md "Disentanglement").

    python -m secoustic_jax.eval.disentangle --ckpt runs/small --corpus cache/demo_corpus \
        --out reports/small/probe.json

On every utterance of the given manifests (default: all splits of an embedded corpus,
>= 100 utterances and >= 10 speakers), a linear speaker probe (eval/probe.py) is
cross-validated with GroupKFold by *text*, so test folds hold unseen sentences. Voices
that share an underlying speaker (flite_slt / festival_slt, flite_kal16 / festival_kal)
are one class. Features:
- `G`: the paralinguistic vector (mu, centred crop as the API takes it);
- `S_pooled`: the time mean of the token embedding S = project_out(codes);
- `tokens`: the L1-normalised token histogram;
- baselines: `G_random_init` (the same encoder with fresh PyTorch-default weights: what
  the architecture gives without training) and `speaker_embedding` (resemblyzer on the
  original audio: what a speaker model can read off the signal).
Each accuracy comes with a 95 % Wilson interval over the N pooled predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys

import jax
import numpy as np

from secoustic_jax.api import Codec
from secoustic_jax.audio.io import load_audio
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.manifest import audio_path, load_manifest
from secoustic_jax.data.synth import VOICES
from secoustic_jax.eval.checkpoints import load_codec
from secoustic_jax.eval.probe import bag_of_tokens, speaker_probe
from secoustic_jax.eval.speaker import SPEAKER_SR, speaker_embedding
from secoustic_jax.model.codec import SecoustiCodec

Z95 = 1.959964


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion correct / n."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson_interval: need 0 <= correct <= n, n > 0 (got {correct}, {n})")
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # At p = 0 or 1 one end is exactly p; the formula gives it only up to rounding.
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


@dataclasses.dataclass
class Utterance:
    utt_id: str
    speaker: str  # class label (underlying speaker)
    voice: str
    text: str
    mel: np.ndarray  # [T, 80]
    audio: str


def underlying_speaker(voice: str) -> str:
    """Voice id -> class label: voices built from one recorded speaker share a label."""
    v = VOICES.get(voice.split(":", 1)[-1])  # manifest ids: "synthetic:<voice>"
    same = v.speaker_group if v is not None else ""
    return same or voice


def load_utterances(manifests, limit: int | None = None) -> list[Utterance]:
    out = []
    for m in manifests:
        recs, _ = load_manifest(m)
        for r in sorted(recs, key=lambda r: r["id"]):
            voice = r["speaker"]
            out.append(Utterance(r["id"], underlying_speaker(voice), voice, r.get("text") or r["id"],
                                 utterance_mel(str(audio_path(r))), str(audio_path(r))))
    return out[:limit] if limit else out


def _batches(utts: list[Utterance], hop: int, size: int = 16):
    """Length-sorted chunks -> (indices, padded mel [b, T, 80], lengths [b]) with T a
    multiple of hop (the causal encoder makes each item's tokens independent of padding)."""
    order = sorted(range(len(utts)), key=lambda i: utts[i].mel.shape[0])
    for k in range(0, len(order), size):
        idx = order[k:k + size]
        lens = np.asarray([utts[i].mel.shape[0] // hop * hop for i in idx], np.int32)
        mel = np.zeros((len(idx), int(lens.max()), 80), np.float32)
        for j, i in enumerate(idx):
            mel[j, :lens[j]] = utts[i].mel[:lens[j]]
        yield idx, mel, lens


def codec_features(codec, utts: list[Utterance]) -> dict[str, np.ndarray]:
    """G, time-pooled S and the token histogram of every utterance -> {name: [N, D]}."""
    cfg = codec.config
    embed = jax.jit(lambda v, t: SecoustiCodec(cfg).apply(v, t, method=lambda m, x: m.fsq.decode(x)))
    n, d = len(utts), cfg.transformer.d_model
    g, s, h = np.zeros((n, d)), np.zeros((n, d)), np.zeros((n, cfg.codebook_size))
    for idx, mel, lens in _batches(utts, cfg.hop):
        g[idx] = codec.prompt_embedding(mel, lens)
        tokens = codec.encode_tokens(mel, lens)
        emb = np.asarray(embed(codec.variables, tokens))
        for j, i in enumerate(idx):
            t = cfg.num_tokens(int(lens[j]))
            s[i] = emb[j, :t].mean(axis=0)
            h[i] = bag_of_tokens(tokens[j, :t], cfg.codebook_size)
    return {"G": g, "S_pooled": s, "tokens": h}


def speaker_embeddings(utts: list[Utterance], cache: pathlib.Path | None = None) -> np.ndarray:
    """resemblyzer embeddings [N, 256] of the original audio, cached by utterance id (they
    depend on the audio only, not on any checkpoint)."""
    known = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            known = {k: z[k] for k in z.files}
    missing = [u for u in utts if u.utt_id not in known]
    for u in missing:
        wav, _ = load_audio(u.audio, SPEAKER_SR)
        known[u.utt_id] = speaker_embedding(wav)
    if missing and cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **known)
    return np.stack([known[u.utt_id] for u in utts])


def baseline_features(codec, utts: list[Utterance], seed: int = 0,
                      embedding_cache: pathlib.Path | None = None) -> dict[str, np.ndarray]:
    """G of a randomly initialised codec, and resemblyzer embeddings of the original audio."""
    rand = Codec.init(codec.config, seed=seed)
    g = np.zeros((len(utts), codec.config.transformer.d_model))
    for idx, mel, lens in _batches(utts, codec.config.hop):
        g[idx] = rand.prompt_embedding(mel, lens)
    return {"G_random_init": g, "speaker_embedding": speaker_embeddings(utts, embedding_cache)}


def run(codec, utts: list[Utterance], n_splits: int = 5, baselines: bool = True,
        embedding_cache: pathlib.Path | None = None) -> dict:
    """-> {"n_utterances", "n_speakers", "features": {name: probe result + CI}}."""
    feats = codec_features(codec, utts)
    if baselines:
        feats.update(baseline_features(codec, utts, embedding_cache=embedding_cache))
    labels = np.asarray([u.speaker for u in utts])
    texts = np.asarray([u.text for u in utts])
    out = {"n_utterances": len(utts), "n_speakers": int(np.unique(labels).size),
           "n_texts": int(np.unique(texts).size), "grouped_by": "text", "features": {}}
    for name, x in feats.items():
        res = dataclasses.asdict(speaker_probe(x, labels, texts, n_splits))
        correct = int(round(res["accuracy"] * res["n_samples"]))
        res["ci95"] = wilson_interval(correct, res["n_samples"])
        out["features"][name] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="training workdir or official .pt")
    ap.add_argument("--corpus", help="embedded corpus folder: all its splits")
    ap.add_argument("--manifest", action="append", default=[], help="manifest(s) instead")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    manifests = list(args.manifest)
    if args.corpus:
        manifests += [pathlib.Path(args.corpus) / f"{s}.jsonl"
                      for s in ("train", "valid", "test", "test_unseen")]
    if not manifests:
        ap.error("give --corpus or --manifest")
    codec, entry = load_codec(args.ckpt)
    cache = pathlib.Path(args.corpus) / "speaker_embeddings.npz" if args.corpus else None
    result = run(codec, load_utterances(manifests, args.limit), baselines=not args.no_baselines,
                 embedding_cache=cache)
    result["checkpoint"] = entry
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for name, r in result["features"].items():
        lo, hi = r["ci95"]
        print(f"{name:18s} {r['accuracy']:.3f}  [{lo:.3f}, {hi:.3f}]  chance {r['chance']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
