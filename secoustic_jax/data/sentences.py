"""Deterministic sentence generator for the embedded corpus (templates x word lists).

The word lists and templates in `sentences.json` were written for this project (no
third-party text). The same (n, seed) always gives the same unique sentences, in order.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re

import numpy as np

_DATA = pathlib.Path(__file__).with_name("sentences.json")
_SLOT = re.compile(r"\{(\w+)\}")


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict, tuple[str, ...]]:
    data = json.loads(_DATA.read_text(encoding="utf-8"))
    slots = {k: tuple(v) for k, v in data["slots"].items()}
    templates = tuple(data["templates"])
    for t in templates:
        missing = set(_SLOT.findall(t)) - set(slots)
        if missing:
            raise ValueError(f"{_DATA.name}: template {t!r} uses unknown slots {sorted(missing)}")
    return slots, templates


def _fill(template: str, slots: dict, rng: np.random.Generator) -> str:
    text = _SLOT.sub(lambda m: slots[m.group(1)][rng.integers(len(slots[m.group(1)]))], template)
    return text[0].upper() + text[1:]


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` unique sentences, deterministic in (n, seed); prefixes agree across n.

    Raises ValueError if the grammar cannot produce `n` unique sentences.
    """
    slots, templates = _load()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not generate {n} unique sentences")
        s = _fill(templates[rng.integers(len(templates))], slots, rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def split_sentences(sentences: list[str], n_valid: int, n_test: int
                    ) -> dict[str, list[str]]:
    """Disjoint split by sentence: the last n_test are test, the n_valid before are valid."""
    if n_valid + n_test >= len(sentences):
        raise ValueError("not enough sentences for the requested valid/test sizes")
    n_train = len(sentences) - n_valid - n_test
    return {"train": sentences[:n_train], "valid": sentences[n_train:n_train + n_valid],
            "test": sentences[n_train + n_valid:]}
