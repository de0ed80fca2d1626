"""The one precision policy: presets, overrides, canonical specs, refusals."""

from __future__ import annotations

import argparse

import pytest

from secoustic_jax.precision import PRESETS, Precision, cli_type


def test_presets_and_overrides():
    assert Precision.parse("exact") == Precision()
    fast = Precision.parse("fast")
    assert (fast.matmul, fast.vocoder_conv, fast.stream_weights, fast.kv) == ("bfloat16",) * 4
    custom = Precision.parse("fast,stream_stacks=decoder,vocoder_conv=float32")
    assert custom.stream_stacks == "decoder" and custom.vocoder_conv == "float32"
    assert custom.matmul == "bfloat16"  # the preset's other fields stay
    assert Precision.parse("kv=bfloat16") == Precision(kv="bfloat16")  # overrides of exact


@pytest.mark.parametrize("spec", ["exact", "fast", "serve-int8", "exact,kv=bfloat16",
                                  "serve-int8,stream_stacks=decoder"])
def test_the_canonical_spec_parses_back(spec):
    p = Precision.parse(spec)
    assert Precision.parse(str(p)) == p
    assert p.as_dict()["spec"] == str(p)
    assert (p.name in PRESETS) == (str(p) in PRESETS)


@pytest.mark.parametrize("spec, message", [
    ("turbo", "unknown precision preset 'turbo'"),
    ("exact,kv=float16", "precision kv must be one of"),
    ("exact,weights=int8", "expected field=value with field in"),
    ("exact,stream_stacks=decoder", "needs stream_weights bfloat16 or int8"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        Precision.parse(spec)
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        cli_type(spec)
