"""The declarative official-key <-> Flax-path mechanism, used in both directions, strictly.

A table is a list of `Entry` rows, one per official state-dict entry, in state-dict order.
Each row names the torch key, the path of the matching leaf in the Flax variables dict
(collection first, e.g. `("params", "encoder", "layer_0", "kernel")`), the torch shape
and dtype, and a named layout transform. The same rows drive import and export, so the
two directions cannot drift apart.

Import is strict: every key must be consumed exactly once, with the right shape and
dtype; the error lists every missing, unexpected and mis-shaped key at once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

import numpy as np

from secoustic_jax.tree import flatten


class CheckpointError(ValueError):
    """A checkpoint file or state dict does not match what was asked for."""


@dataclasses.dataclass(frozen=True)
class Transform:
    """A bijective layout change between the torch tensor and the Flax leaf.

    `to_flax(a)` gets the torch-layout array; `to_torch(a, torch_shape)` gets the Flax
    leaf and the torch shape it must produce.
    """

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray, tuple], np.ndarray]


def _reshape_back(a, shape):
    return np.reshape(a, shape)


TRANSFORMS: dict[str, Transform] = {t.name: t for t in [
    # Same array on both sides (LayerNorm, LayerScale, biases, GRU in PyTorch layout).
    Transform("identity", lambda a: a, lambda a, s: _reshape_back(a, s)),
    # Linear weight [out, in] <-> Dense kernel [in, out].
    Transform("linear", lambda a: a.T, lambda a, s: a.T),
    # Conv1d weight [out, in, k] <-> [k, in, out].
    Transform("conv1d", lambda a: a.transpose(2, 1, 0), lambda a, s: a.transpose(2, 1, 0)),
    # ConvTranspose1d weight [in, out, k] <-> [k, in, out] unflipped (kernel[j] = W[:, :, j]).
    Transform("conv_transpose1d", lambda a: a.transpose(2, 0, 1),
              lambda a, s: a.transpose(1, 2, 0)),
    # Conv2d weight [out, in, kh, kw] <-> [kh, kw, in, out].
    Transform("conv2d", lambda a: a.transpose(2, 3, 1, 0), lambda a, s: a.transpose(3, 2, 0, 1)),
    # Weight-norm gain g [out, 1, 1] (or [in, 1, 1] for ConvTranspose) <-> vector [C].
    Transform("squeeze", lambda a: a.reshape(a.shape[0]), lambda a, s: _reshape_back(a, s)),
    # BatchNorm num_batches_tracked: int64 scalar <-> int32 scalar (JAX default ints).
    Transform("count", lambda a: np.asarray(a, np.int32).reshape(()),
              lambda a, s: np.asarray(a, np.int64).reshape(s)),
]}


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_key: str
    path: tuple[str, ...]
    torch_shape: tuple[int, ...]
    transform: str = "identity"
    dtype: str = "float32"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{self.torch_key}: unknown transform {self.transform!r}")


# ---- nested dict helpers ---------------------------------------------------------------

def get_path(tree: Mapping, path: Iterable[str]):
    node = tree
    for p in path:
        node = node[p]
    return node


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


# ---- strict import / export ----------------------------------------------------------

def strip_wrapper_prefixes(state_dict: Mapping[str, np.ndarray]) -> tuple[dict, list[str]]:
    """Removes DDP `module.` and torch.compile `_orig_mod.` prefixes; returns what it did."""
    notes = []
    sd = dict(state_dict)
    for prefix in ("module.", "_orig_mod."):
        while sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            notes.append(f"stripped prefix {prefix!r} from every key")
    return sd, notes


def _format_problems(missing, unexpected, misshaped, what: str) -> str:
    lines = [f"{what}: state dict does not match ({len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped or mis-typed)"]
    lines += [f"  missing:     {k}" for k in missing]
    lines += [f"  unexpected:  {k}" for k in unexpected]
    lines += [f"  mis-shaped:  {m}" for m in misshaped]
    return "\n".join(lines)


def import_state_dict(table: list[Entry], state_dict: Mapping[str, np.ndarray], *,
                      what: str = "checkpoint", ignore_prefixes: tuple[str, ...] = ()) -> dict:
    """Official state dict -> nested Flax variables dict, strictly.

    `ignore_prefixes` lets a user drop keys of training-only modules explicitly.
    Raises CheckpointError listing every problem.
    """
    expected = {e.torch_key: e for e in table}
    keys = [k for k in state_dict if not any(k.startswith(p) for p in ignore_prefixes)]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in keys if k not in expected]
    misshaped = []
    for key in keys:
        e = expected.get(key)
        if e is None:
            continue
        a = np.asarray(state_dict[key])
        if tuple(a.shape) != e.torch_shape:
            misshaped.append(f"{key}: shape {list(a.shape)}, expected {list(e.torch_shape)}")
        elif a.dtype != np.dtype(e.dtype):
            misshaped.append(f"{key}: dtype {a.dtype}, expected {e.dtype}")
    if missing or unexpected or misshaped:
        raise CheckpointError(_format_problems(missing, unexpected, misshaped, what))
    variables: dict = {}
    for e in table:
        a = np.asarray(state_dict[e.torch_key])
        set_path(variables, e.path, np.array(TRANSFORMS[e.transform].to_flax(a), order="C"))
    return variables


def export_state_dict(table: list[Entry], variables: Mapping, *, what: str = "model") -> dict:
    """Nested Flax variables -> official state dict (numpy, torch layouts, TSV order).

    Every table path must exist in `variables` and every leaf of the covered collections
    must be claimed by exactly one row, so nothing is silently left out of the export.
    """
    flat = flatten(variables)
    claimed = {e.path for e in table}
    collections = {e.path[0] for e in table}
    unclaimed = [p for p in flat if p[0] in collections and p not in claimed]
    absent = [e.path for e in table if e.path not in flat]
    if unclaimed or absent:
        raise CheckpointError(
            f"{what}: variables do not match the name table\n"
            + "".join(f"  not in table: {'/'.join(p)}\n" for p in unclaimed)
            + "".join(f"  missing leaf: {'/'.join(p)}\n" for p in absent))
    out = {}
    for e in table:
        leaf = np.asarray(flat[e.path])
        a = TRANSFORMS[e.transform].to_torch(leaf, e.torch_shape)
        a = np.array(a, dtype=np.dtype(e.dtype), order="C")  # keeps 0-d scalars 0-d
        if tuple(a.shape) != e.torch_shape:
            raise CheckpointError(f"{what}: {e.torch_key} exports as {list(a.shape)}, "
                                  f"expected {list(e.torch_shape)} (leaf {'/'.join(e.path)})")
        out[e.torch_key] = a
    return out


def read_key_tsv(path) -> list[tuple[str, tuple[int, ...], str]]:
    """Reads an official key list: `key<TAB>[d0, d1]<TAB>dtype` per line, no header."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            key, shape, dtype = line.rstrip("\n").split("\t")
            dims = shape.strip("[]").strip()
            rows.append((key, tuple(int(d) for d in dims.split(",")) if dims else (),
                         dtype.replace("torch.", "")))
    return rows
