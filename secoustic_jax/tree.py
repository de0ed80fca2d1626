"""The one flatten helper for nested-dict pytrees (params, labels, specs, checkpoints).

`flatten(tree)` -> {("a", "b"): leaf}; `flatten(tree, "/")` -> {"a/b": leaf}. Empty
subtrees vanish and None/empty trees flatten to {}; `unflatten` inverts either form.
"""

from __future__ import annotations

from typing import Mapping

from flax import traverse_util


def flatten(tree: Mapping | None, sep: str | None = None) -> dict:
    """Nested dicts (or FrozenDicts) -> {path: leaf}; path is a tuple, or joined by `sep`."""
    if not tree:
        return {}
    return traverse_util.flatten_dict(tree, sep=sep)


def unflatten(flat: Mapping, sep: str | None = None) -> dict:
    """Inverse of `flatten` (same `sep`)."""
    if sep is not None:
        flat = {tuple(k.split(sep)): v for k, v in flat.items()}
    return traverse_util.unflatten_dict(dict(flat))
