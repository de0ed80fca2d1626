"""Voice conversion pairs (evaluation.md §5) and disentanglement probe features (§6).

VC swaps exactly one thing relative to the `token` condition: the paralinguistic vector.
For an ordered pair of speakers (a, b), a != b, the tokens of a source utterance of a are
decoded with G_b, the vector of b's prompt utterance (its centred <= 300-frame crop, the
same G the `token` condition uses for that utterance). Speakers are `Utterance.group`s,
so voices that share an underlying speaker (festival/flite slt) count as one.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from secoustic_jax.eval import probe
from secoustic_jax.eval.probe import bag_of_tokens
from secoustic_jax.eval.speaker import cosine as _cos

PROMPT_FRAMES = 300  # a full paralinguistic crop (3.48 s)
HOP_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class VCPair:
    """source: index of the source utterance (speaker a); target: speaker b; prompt:
    index of b's prompt utterance whose G is used."""

    source: int
    target: str
    prompt: int


@dataclasses.dataclass
class VCPlan:
    pairs: list[VCPair]
    prompts: dict[str, int]  # speaker -> prompt utterance index
    ceilings: dict[str, tuple[int, int]]  # speaker -> (prompt, another utterance) for the ceiling
    notes: list[str]


def _frames(utt) -> int:
    return utt.num_samples // HOP_SAMPLES


def _prompts(utts, groups: list[str], notes: list[str]) -> dict[str, int]:
    """First utterance of each speaker with a full 300-frame crop (else its longest)."""
    prompts = {}
    for g in groups:
        idx = [i for i, u in enumerate(utts) if u.group == g]
        full = [i for i in idx if _frames(utts[i]) >= PROMPT_FRAMES]
        if full:
            prompts[g] = full[0]
        else:
            prompts[g] = max(idx, key=lambda i: (_frames(utts[i]), -i))
            notes.append(f"speaker {g}: no utterance >= 3.48 s; prompt {utts[prompts[g]].utt_id} "
                         f"is shorter than a full crop")
    return prompts


def plan_vc(utts: Sequence, sources_per_pair: int = 10, max_pairs: int | None = None) -> VCPlan:
    """Deterministic VC plan over a multi-speaker test set (utterances in set order).

    For each ordered pair (a, b): up to `sources_per_pair` utterances of a whose text
    differs from b's prompt text. With `max_pairs`, speaker pairs are taken in rounds
    (every a -> its next speaker, then the one after, ...) so every speaker appears as
    source and target before any pair is repeated with another offset.
    """
    groups = sorted({u.group for u in utts if u.group})
    if len(groups) < 2:
        raise ValueError("voice conversion needs at least two speakers in the test set")
    notes: list[str] = []
    prompts = _prompts(utts, groups, notes)
    ceilings = {}
    for g in groups:
        others = [i for i, u in enumerate(utts) if u.group == g and i != prompts[g]]
        if others:
            ceilings[g] = (prompts[g], others[0])
    ordered = [(groups[i], groups[(i + off) % len(groups)])
               for off in range(1, len(groups)) for i in range(len(groups))]
    if max_pairs is not None:
        ordered = ordered[:max_pairs]
    pairs = []
    for a, b in ordered:
        prompt_text = utts[prompts[b]].text
        src = [i for i, u in enumerate(utts)
               if u.group == a and (u.text is None or u.text != prompt_text)]
        pairs.extend(VCPair(i, b, prompts[b]) for i in src[:sources_per_pair])
    return VCPlan(pairs, prompts, ceilings, notes)


def vc_inputs(plan: VCPlan, outputs: Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(tokens of each pair's source [T'_i] int32, G of its target prompt [d]): the only
    change from the `token` condition is the G."""
    tokens = [outputs[p.source].tokens for p in plan.pairs]
    gs = [outputs[p.prompt].g for p in plan.pairs]
    return tokens, gs


def pair_id(utts: Sequence, pair: VCPair) -> str:
    return f"{utts[pair.source].utt_id}->{pair.target}"


def cosine(a, b) -> float:
    return _cos(a, b)


def vc_metrics(emb_out, emb_src, emb_prompt) -> dict[str, float]:
    """sim_tgt, sim_src (leakage), success (sim_tgt > sim_src) and the floor for one pair."""
    tgt, src = cosine(emb_out, emb_prompt), cosine(emb_out, emb_src)
    return {"sim_tgt": tgt, "sim_src": src, "vc_success": float(tgt > src),
            "sim_floor": cosine(emb_src, emb_prompt)}


def ceiling(plan: VCPlan, embeddings: dict[int, np.ndarray]) -> float | None:
    """Mean over speakers of cos(two originals of b), §5 context value."""
    vals = [cosine(embeddings[i], embeddings[j]) for i, j in plan.ceilings.values()
            if i in embeddings and j in embeddings]
    return float(np.mean(vals)) if vals else None


def cross_speaker_floor(utts: Sequence, embeddings: dict[int, np.ndarray]) -> float | None:
    """Mean cosine between originals of different speakers (§4.6 E2 floor)."""
    idx = sorted(i for i in embeddings if utts[i].group)
    vals = [cosine(embeddings[i], embeddings[j]) for n, i in enumerate(idx) for j in idx[n + 1:]
            if utts[i].group != utts[j].group]
    return float(np.mean(vals)) if vals else None


def probe_features(outputs: Sequence, num_codes: int) -> dict[str, np.ndarray]:
    """§6 features per utterance: (a) bag of tokens [N, num_codes], (b) mean decoded code
    embedding S [N, d], (c) G [N, d]."""
    return {"tokens": np.stack([bag_of_tokens(o.tokens, num_codes) for o in outputs]),
            "semantic": np.stack([o.semantic_mean for o in outputs]),
            "G": np.stack([o.g for o in outputs])}


def run_probes(utts: Sequence, outputs: Sequence, num_codes: int,
               prefix: str = "") -> tuple[dict, list[str]]:
    """Speaker probe (grouped by text) and, when texts are shared across speakers, the
    content probe (grouped by speaker) for each feature. -> (probe dict, notes)."""
    notes: list[str] = []
    voices = np.asarray([u.group for u in utts])
    texts = np.asarray([u.text or u.utt_id for u in utts])
    feats = probe_features(outputs, num_codes)
    n_text = len(set(texts.tolist()))
    out: dict[str, dict] = {}
    if len(set(voices.tolist())) < 2 or n_text < 2:
        return out, ["probe skipped: needs >= 2 speakers and >= 2 texts"]
    shared = [t for t in sorted(set(texts.tolist())) if len(set(voices[texts == t].tolist())) >= 2]
    keep = np.isin(texts, shared)
    n_vgroups = len(set(voices[keep].tolist()))
    if len(shared) < 2 or n_vgroups < 2:
        notes.append("content probe skipped: fewer than 2 texts are read by more than one speaker")
    _, per_class = np.unique(voices, return_counts=True)
    if per_class.min() < 2:
        return out, ["probe skipped: every speaker needs >= 2 utterances"]
    for name, x in feats.items():
        try:
            sp = probe.speaker_probe(x, voices, texts, n_splits=min(probe.DEFAULT_SPLITS, n_text))
            entry = {"speaker": dataclasses.asdict(sp)}
            if len(shared) >= 2 and n_vgroups >= 2:
                cp = probe.content_probe(x[keep], voices[keep], texts[keep],
                                         n_splits=min(probe.DEFAULT_SPLITS, n_vgroups))
                entry["content"] = dataclasses.asdict(cp)
        except ValueError as e:  # e.g. a training fold left with a single class
            notes.append(f"probe on {name} failed: {e}")
            continue
        out[f"{prefix}{name}"] = entry
    return out, notes
