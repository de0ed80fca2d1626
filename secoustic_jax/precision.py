"""One precision policy for running a trained codec: named presets plus explicit overrides.

    Precision.parse("exact")                       # float32 everywhere (the default)
    Precision.parse("fast")                        # bf16 operands, float32 accumulation
    Precision.parse("serve-int8")                  # int8 streaming weights, bf16 KV
    Precision.parse("fast,stream_stacks=decoder")  # a preset, then field=value overrides

Fields (what each mechanism rounds; accumulation is float32 in every mode, and FSQ, the
softmaxes and LayerNorm statistics are float32 always):

- `matmul`: the offline transformer matmuls (`Codec(matmul_dtype=...)`: bf16 stack weights
  and bf16-rounded activations);
- `vocoder_conv`: the HiFT decoder convolutions (`Vocoder(conv_dtype=...)`);
- `stream_weights`: the streaming transformer weights as stored (`float32`, `bfloat16` or
  `int8` with per-column scales: `streaming.lowp`);
- `stream_stacks`: `all` or `decoder` (only the stacks after the tokens are narrowed, so
  streaming tokens equal the float32 stream's);
- `kv`: the streaming KV rings.

Training precision is the codec config's (`codec.compute_dtype`, `codec.param_dtype`):
a checkpoint records it, so it is not a run-time choice. `str(policy)` is the canonical
spec that results and reports record, so runs at different precisions are never mixed.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

FIELDS = {"matmul": ("float32", "bfloat16"), "vocoder_conv": ("float32", "bfloat16"),
          "stream_weights": ("float32", "bfloat16", "int8"),
          "stream_stacks": ("all", "decoder"), "kv": ("float32", "bfloat16")}


@dataclass(frozen=True)
class Precision:
    matmul: str = "float32"
    vocoder_conv: str = "float32"
    stream_weights: str = "float32"
    stream_stacks: str = "all"
    kv: str = "float32"

    def __post_init__(self) -> None:
        for name, allowed in FIELDS.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"precision {name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if self.stream_stacks == "decoder" and self.stream_weights == "float32":
            raise ValueError("precision stream_stacks=decoder narrows the decoder-side stacks "
                             "only: it needs stream_weights bfloat16 or int8")

    @classmethod
    def parse(cls, spec: str) -> "Precision":
        """"preset" or "preset,field=value,..." (or only "field=value,...", from exact)."""
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
        base = PRESETS["exact"]
        if parts and "=" not in parts[0]:
            name = parts.pop(0)
            if name not in PRESETS:
                raise ValueError(f"unknown precision preset {name!r} (have {sorted(PRESETS)})")
            base = PRESETS[name]
        overrides = {}
        for p in parts:
            key, sep, value = p.partition("=")
            if not sep or key not in FIELDS:
                raise ValueError(f"precision override {p!r}: expected field=value with field in "
                                 f"{sorted(FIELDS)}")
            overrides[key] = value
        return dataclasses.replace(base, **overrides)

    @property
    def name(self) -> str:
        """The preset this equals, or "custom"."""
        return next((n for n, p in PRESETS.items() if p == self), "custom")

    def __str__(self) -> str:
        """Canonical spec: the preset name, or exact plus the fields that differ from it."""
        if self.name != "custom":
            return self.name
        base = PRESETS["exact"]
        diff = [f"{f}={getattr(self, f)}" for f in FIELDS if getattr(self, f) != getattr(base, f)]
        return ",".join(["exact", *diff])

    def as_dict(self) -> dict:
        return {"spec": str(self), **dataclasses.asdict(self)}


PRESETS = {
    "exact": Precision(),
    # bf16 operands with float32 accumulation wherever a kernel or XLA makes it faster;
    # a measured change that moves some tokens (bench/NOTES.md sections 6, 9, 10).
    "fast": Precision(matmul="bfloat16", vocoder_conv="bfloat16", stream_weights="bfloat16",
                      kv="bfloat16"),
    # Streaming at batch 1: a quarter of the weight bytes per step (section 7).
    "serve-int8": Precision(stream_weights="int8", kv="bfloat16"),
}


def cli_type(spec: str) -> Precision:
    """argparse `type=` for a --precision option: keeps the policy's own error message."""
    try:
        return Precision.parse(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
