"""norm-v1 normaliser (evaluation.md §4.5): spec examples, speller edge cases, bad input."""

import pytest

from secoustic_jax.data.text_norm import (
    normalize_text,
    spell_cardinal,
    spell_digits,
    spell_ordinal,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("dial 500", "dial five hundred"),
        ("28.8", "twenty eight point eight"),
        ("2nd", "second"),
        ("*", "star"),
        ("Press # now", "press pound now"),
        ("1234", "one thousand two hundred thirty four"),
        ("1,234", "one thousand two hundred thirty four"),
        ("[beep] Please hold [pause].", "please hold"),
        ("[tt-monkeys]", ""),
        ("R&D @ 5% + more", "r and d at five percent plus more"),
        ("Twenty-eight", "twenty eight"),
        ("Don’t STOP!", "don't stop"),
        ("'quoted' words", "quoted words"),
        ("the 21st and 12th floors", "the twenty first and twelfth floors"),
        ("at 10am", "at ten am"),
        ("3.14159", "three point one four one five nine"),
        ("0.5", "zero point five"),
        ("costs 5.", "costs five"),
        ("1,000,000", "one million"),
        ("call 18005551212", "call one eight zero zero five five five one two one two"),
        ("  many   spaces\t\n", "many spaces"),
    ],
)
def test_normalize_examples(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (1000, "one thousand"),
        (1001, "one thousand one"),
        (20_019, "twenty thousand nineteen"),
        (1_000_000, "one million"),
        (12_000_345, "twelve million three hundred forty five"),
        (999_999_999, "nine hundred ninety nine million nine hundred ninety nine "
                      "thousand nine hundred ninety nine"),
    ],
)
def test_spell_cardinal(n, expected):
    assert spell_cardinal(n) == expected


@pytest.mark.parametrize(
    "n, expected",
    [(1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"),
     (9, "ninth"), (12, "twelfth"), (20, "twentieth"), (23, "twenty third"),
     (100, "one hundredth"), (1000, "one thousandth")],
)
def test_spell_ordinal(n, expected):
    assert spell_ordinal(n) == expected


def test_speller_rejects_out_of_range_and_bad_types():
    with pytest.raises(ValueError, match="0..999999999"):
        spell_cardinal(1_000_000_000)
    with pytest.raises(ValueError):
        spell_cardinal(-1)
    with pytest.raises(TypeError):
        spell_cardinal(3.0)
    with pytest.raises(ValueError):
        spell_digits("12a")
    with pytest.raises(TypeError):
        normalize_text(None)


def test_output_alphabet_and_idempotence():
    raw = "Ünïcode — 3rd (draft) #42: 50% off & free! [note]"
    out = normalize_text(raw)
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz' ")
    assert normalize_text(out) == out
