"""Phone-label normalisation per phone set and the shared phone inventory (data.md §3).

Manifest phones are stored normalised and prefixed with their set (`arpabet:AH`,
`ipa:æ`, `pinyin:uang3`), except the shared reserved labels SIL, SPN and WB.
Inventory IDs: 0 = padding, 1 = SIL, 2 = SPN, 3 = WB, then every other phone sorted.
"""

from __future__ import annotations

import json
import pathlib
import re

from secoustic_jax.atomic import atomic_path

PAD, SIL, SPN, WB = "<pad>", "SIL", "SPN", "WB"
RESERVED = (PAD, SIL, SPN, WB)
PHONE_SETS = ("arpabet", "ipa", "pinyin")
INVENTORY_NAME = "phones.json"

# Festival/flite "radio" phones outside the 39-phone CMU set, mapped one to one.
RADIO_MAP = {"ax": "AH", "axr": "ER", "dx": "D", "el": "L", "em": "M", "en": "N", "hv": "HH",
             "nx": "N", "pau": SIL, "h#": SIL, "brth": SPN}
CMU39 = frozenset(("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R "
                   "S SH T TH UH UW V W Y Z ZH").split())
_SILENCES = {"", "sil", "sp", "<sil>", "pau", "silence"}
_IPA_STRESS = ("ˈ", "ˌ")
_IPA_LENGTH = "ː"
_IPA_SIL = set("^$.,!?;:…—–-\"'()«»¡¿")
_PINYIN_RE = re.compile(r"^[a-zü:v]+[0-5]?$")


class PhoneError(ValueError):
    """A phone label cannot be normalised in its declared set."""


def arpabet(label: str, keep_stress: bool = False) -> str:
    """One ARPAbet / radio / MFA / pocketsphinx label -> normalised manifest phone."""
    raw = label.strip()
    low = raw.lower()
    if low in _SILENCES:
        return SIL
    if low == "spn" or (raw.startswith("+") and raw.endswith("+")):
        return SPN
    if low in RADIO_MAP:
        mapped = RADIO_MAP[low]
        return mapped if mapped in (SIL, SPN) else f"arpabet:{mapped}"
    up = raw.upper()
    base = up.rstrip("012")
    if base not in CMU39:
        raise PhoneError(f"unknown ARPAbet phone {label!r}")
    return f"arpabet:{up if keep_stress else base}"


def pinyin(label: str) -> str:
    """An initial or a tonal final (`g`, `uang3`) -> `pinyin:...`; silences -> SIL."""
    low = label.strip().lower()
    if low in _SILENCES:
        return SIL
    if low == "spn":
        return SPN
    if not _PINYIN_RE.match(low):
        raise PhoneError(f"not a pinyin initial/final: {label!r}")
    return f"pinyin:{low}"


def ipa_sequence(labels: list[str], durations: list[int]) -> tuple[list[str], list[int]]:
    """Applies the IPA rules of data.md §3 to a (label, duration) sequence.

    Stress marks merge (with their duration) into the following phone; the length mark
    merges into the preceding phone (appended to its label); `^`, `$` and punctuation
    become SIL, a space becomes WB, empty labels SIL. Adjacent SILs are NOT merged
    (durations are kept one to one where possible). Returns new (phones, durations).
    """
    out_p: list[str] = []
    out_d: list[int] = []
    carry = 0  # duration of pending stress marks
    for lab, dur in zip(labels, durations):
        if lab in (SIL, SPN, WB):  # already normalised (e.g. SIL added by align.py)
            out_p.append(lab)
            out_d.append(dur + carry)
            carry = 0
            continue
        lab = lab.strip(" ") if lab != " " else lab
        core = "".join(ch for ch in lab if ch not in _IPA_STRESS)
        if lab and not core:  # pure stress mark(s)
            carry += dur
            continue
        if core == _IPA_LENGTH:
            if out_p and out_p[-1].startswith("ipa:"):
                out_p[-1] += _IPA_LENGTH
                out_d[-1] += dur
                continue
            core = ""
        if core == " ":
            out_p.append(WB)
        elif core == "" or all(ch in _IPA_SIL for ch in core):
            out_p.append(SIL)
        else:
            out_p.append(f"ipa:{core}")
        out_d.append(dur + carry)
        carry = 0
    if carry:  # trailing stress mark with nothing after it
        if not out_d:
            out_p.append(SIL)
            out_d.append(0)
        out_d[-1] += carry
    return out_p, out_d


def normalise(labels: list[str], durations: list[int], phone_set: str,
              keep_stress: bool = False) -> tuple[list[str], list[int]]:
    """Normalises a whole sequence in `phone_set`; durations are kept (or merged for ipa)."""
    if phone_set == "arpabet":
        return [arpabet(p, keep_stress) for p in labels], list(durations)
    if phone_set == "pinyin":
        return [pinyin(p) for p in labels], list(durations)
    if phone_set == "ipa":
        return ipa_sequence(labels, durations)
    raise PhoneError(f"unknown phone set {phone_set!r} (have {PHONE_SETS})")


class PhoneInventory:
    """Phone label <-> integer ID. ID 0 is padding; IDs 1..3 are SIL, SPN, WB."""

    def __init__(self, phones, *, ordered: bool = False):
        """`phones`: labels (any order, reserved ones optional). `ordered=True` keeps the
        given order exactly (a stored inventory; must start with the reserved labels)."""
        if ordered:
            labels = tuple(phones)
            if labels[:4] != RESERVED or len(set(labels)) != len(labels):
                raise ValueError(f"ordered inventory must start with {RESERVED} and be unique")
        else:
            labels = RESERVED + tuple(sorted(set(phones) - set(RESERVED)))
        self.labels: tuple[str, ...] = labels
        self._ids = {p: i for i, p in enumerate(self.labels)}

    def extended(self, phones) -> "PhoneInventory":
        """A new inventory with unseen `phones` appended (existing IDs unchanged)."""
        new = sorted(set(phones) - set(self.labels))
        return PhoneInventory(self.labels + tuple(new), ordered=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, phone: str) -> bool:
        return phone in self._ids and phone != PAD

    def __eq__(self, other) -> bool:
        return isinstance(other, PhoneInventory) and self.labels == other.labels

    def id(self, phone: str) -> int:
        """ID of a manifest phone; KeyError naming it when unknown."""
        if phone == PAD or phone not in self._ids:
            raise KeyError(f"unknown phone {phone!r} (not in the inventory of {len(self)})")
        return self._ids[phone]

    def encode(self, phones: list[str]) -> list[int]:
        return [self.id(p) for p in phones]

    def unknown(self, phones: list[str]) -> list[str]:
        """Phones of `phones` that have no ID (sorted, unique)."""
        return sorted({p for p in phones if p not in self})

    @classmethod
    def from_records(cls, records) -> "PhoneInventory":
        """Builds the vocabulary from manifest records (dicts with optional `phones`)."""
        seen: set[str] = set()
        for r in records:
            seen.update(r.get("phones") or ())
        return cls(sorted(seen))

    def to_json(self) -> dict:
        return {"format": "secoustic-phones-v1", "size": len(self), "phones": list(self.labels)}

    def save(self, path) -> pathlib.Path:
        """Writes JSON atomically (`phones.json` beside the manifest, copied into checkpoints)."""
        p = pathlib.Path(path)
        if p.is_dir():
            p = p / INVENTORY_NAME
        with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
        return p

    @classmethod
    def load(cls, path) -> "PhoneInventory":
        """Reads a file written by `save` (or the folder holding `phones.json`)."""
        p = pathlib.Path(path)
        if p.is_dir():
            p = p / INVENTORY_NAME
        data = json.loads(p.read_text(encoding="utf-8"))
        labels = data.get("phones") if isinstance(data, dict) else None
        if not labels or tuple(labels[:4]) != RESERVED:
            raise ValueError(f"{p}: not a phone inventory (reserved IDs must be {RESERVED})")
        if data.get("size") != len(labels) or len(set(labels)) != len(labels):
            raise ValueError(f"{p}: inventory size field or duplicate labels are inconsistent")
        return cls(labels, ordered=True)
