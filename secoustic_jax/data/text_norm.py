"""Text normaliser `norm-v1` for WER scoring (evaluation.md §4.5).

Applied identically to reference transcripts and ASR hypotheses. Whisper writes numbers
as digits while the Asterisk transcripts mix digits and words, so numbers are spelled
out with the in-repo speller below (0 … 999 999 999) instead of a third-party package
whose output could change between versions.

Steps (in this order):
  0. map typographic apostrophes (U+2018/U+2019/U+02BC) to ``'`` so "don’t" stays one word;
  1. delete bracketed notes ``[...]``;
  2. lower-case;
  3. symbols to words (``& % * # @ +``);
  4. ordinals ``\\d+(st|nd|rd|th)`` to ordinal words, then numbers
     ``\\d+(,\\d{3})*(\\.\\d+)?`` to cardinal words, decimals digit by digit after "point";
  5. hyphens and every character outside ``[a-z' ]`` to spaces, apostrophes stripped at
     word edges, whitespace collapsed.

Integers above 999 999 999 (phone numbers, long digit strings) are read digit by digit,
which is how such strings are spoken; see docs/evaluation.md.
"""

from __future__ import annotations

import re

NORMALISER_VERSION = "norm-v1"
MAX_CARDINAL = 999_999_999

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000, "million"), (1_000, "thousand"))
# Irregular ordinal forms of the last word of a cardinal reading.
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}
_SYMBOLS = {"&": "and", "%": "percent", "*": "star", "#": "pound", "@": "at", "+": "plus"}

_APOSTROPHES = re.compile("[\u2018\u2019\u02bc]")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_SYMBOL_RE = re.compile("[" + re.escape("".join(_SYMBOLS)) + "]")
# Ordinals first: "2nd" would otherwise be split into "two" + "nd".
_ORDINAL_RE = re.compile(r"(?<![\d.,])(\d+)(st|nd|rd|th)\b")
# Lookbehind/lookahead keep "1,2345" or "1.2.3" from matching inside a longer digit run.
_NUMBER_RE = re.compile(r"(?<![\d,.])(\d+(?:,\d{3})*)(?:\.(\d+))?(?!\d)")
_OUTSIDE_ALPHABET = re.compile(r"[^a-z' ]")
_EDGE_APOSTROPHES = re.compile(r"(?<![a-z])'+|'+(?![a-z])")


def _below_thousand(n: int) -> list[str]:
    """Words for 0 < n < 1000 (no "and": Whisper-style American reading)."""
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest:
        words.append(_ONES[rest])
    return words


def spell_cardinal(n: int) -> str:
    """Cardinal reading of an integer 0 … 999 999 999, e.g. 1234 -> "one thousand two
    hundred thirty four". Raises ValueError outside that range."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"spell_cardinal expects an int, got {type(n).__name__}")
    if not 0 <= n <= MAX_CARDINAL:
        raise ValueError(f"spell_cardinal covers 0..{MAX_CARDINAL}, got {n}")
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += _below_thousand(count) + [name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def spell_ordinal(n: int) -> str:
    """Ordinal reading, e.g. 2 -> "second", 21 -> "twenty first", 100 -> "one hundredth"."""
    words = spell_cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def spell_digits(digits: str) -> str:
    """Digit-by-digit reading: "0725" -> "zero seven two five"."""
    if not digits.isdigit():
        raise ValueError(f"spell_digits expects only digits, got {digits!r}")
    return " ".join(_ONES[int(d)] for d in digits)


def spell_number(integer_part: str, fraction: str | None = None) -> str:
    """Reading of a numeric token: "1,234" -> cardinal with commas dropped; a fraction is
    read digit by digit after "point" ("28", "8" -> "twenty eight point eight")."""
    digits = integer_part.replace(",", "")
    value = int(digits)
    # Beyond the speller's range a digit string is a code/phone number: read digits.
    words = spell_cardinal(value) if value <= MAX_CARDINAL else spell_digits(digits)
    if fraction:
        words += " point " + spell_digits(fraction)
    return words


def _replace_ordinal(m: re.Match) -> str:
    value = int(m.group(1))
    if value > MAX_CARDINAL:
        return f" {spell_digits(m.group(1))} {m.group(2)} "
    return f" {spell_ordinal(value)} "


def _replace_number(m: re.Match) -> str:
    # Spaces around the words so "10am" becomes "ten am", not "tenam".
    return f" {spell_number(m.group(1), m.group(2))} "


def normalize_text(text: str) -> str:
    """Apply norm-v1 to one transcript; returns lower-case words joined by single spaces
    ("" if nothing is left, e.g. "[beep]")."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}")
    text = _APOSTROPHES.sub("'", text)
    text = _BRACKETS.sub(" ", text)
    text = text.lower()
    text = _SYMBOL_RE.sub(lambda m: f" {_SYMBOLS[m.group(0)]} ", text)
    text = _ORDINAL_RE.sub(_replace_ordinal, text)
    text = _NUMBER_RE.sub(_replace_number, text)
    text = _OUTSIDE_ALPHABET.sub(" ", text)  # hyphens included
    text = _EDGE_APOSTROPHES.sub(" ", text)
    return " ".join(text.split())
