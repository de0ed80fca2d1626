"""Which variant of each op runs: chosen once per process, from the setting and the backend.

Every op of `secoustic_jax.ops` has a plain-XLA reference with native autodiff
(`ops/reference.py`). CPU variants (`ops/cpu.py`: the C++ custom calls of
`secoustic_jax.kernels`, the per-tap conv gradient, the KV-ring bit tricks) register beside
it. The setting is one of VARIANTS:

- "auto" (the default): where JAX's default backend is the CPU, the CPU variants run;
  anywhere else (TPU, GPU) the reference alone is staged, so no C++ compiler, custom call
  or CPU-tuned gradient is ever part of an accelerator program.
- "reference": the reference everywhere, the CPU included (A/B runs, and the tests that
  check what an accelerator would run).

Variants that are custom calls are staged under `lax.platform_dependent` with the
reference as the default branch, so a CPU host that lowers for another platform still
gets the reference there. Variants that are plain XLA (same ops, another graph) are picked
at trace time.

The choice is read when a function is traced, and `jax.jit` caches traces: set it once at
start-up (`set_variant`), before anything is jitted. `using` (tests) also clears JAX's
caches on entry and exit, so no trace made under one setting runs under the other.
"""

from __future__ import annotations

import contextlib

import jax

from secoustic_jax import kernels

VARIANTS = ("auto", "reference")
_setting = {"variant": "auto"}


def set_variant(name: str) -> None:
    """Chooses the op variants for this process: "auto" or "reference"."""
    if name not in VARIANTS:
        raise ValueError(f"ops variant must be one of {VARIANTS}, got {name!r}")
    _setting["variant"] = name


def variant() -> str:
    return _setting["variant"]


@contextlib.contextmanager
def using(name: str):
    """Runs a block under another variant, with JAX's trace caches cleared around it."""
    previous = variant()
    set_variant(name)
    jax.clear_caches()
    try:
        yield
    finally:
        set_variant(previous)
        jax.clear_caches()


def cpu_variants() -> bool:
    """Whether the CPU variants are staged: setting "auto" on a CPU host."""
    return variant() == "auto" and kernels.stage_cpu_branch()


def dispatch(*operands, cpu, reference):
    """A custom-call variant: `cpu` under `lax.platform_dependent` where the CPU variants
    are on (a CPU lowering takes it, any other lowering the reference), else `reference`
    alone."""
    if not cpu_variants():
        return reference(*operands)
    return jax.lax.platform_dependent(*operands, cpu=cpu, default=reference)


def pick(cpu, reference):
    """A plain-XLA variant: `cpu` where the CPU variants are on, else `reference`."""
    return cpu if cpu_variants() else reference
