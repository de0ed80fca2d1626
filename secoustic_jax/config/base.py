"""Generic helpers for frozen dataclass configs: dict round trip, dotted overrides, hashing.

Every config in this project is a frozen (hashable) dataclass so that it can be a static
argument of `jax.jit`. These helpers work on any nesting of such dataclasses, tuples and
scalars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any


class ConfigError(ValueError):
    """A config value is invalid, or a stored config does not match the requested one."""


def to_dict(cfg: Any) -> Any:
    """Nested dataclass -> plain JSON-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Converts a JSON value to the annotated field type `tp` (dataclasses, tuples, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            raise ConfigError(f"{where}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: {value!r} is not a boolean")
        return bool(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number") from None
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str | None = None) -> Any:
    """Plain dict -> dataclass `cls`, strictly: unknown keys are an error."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def override(cfg: Any, dotted: str, value: Any) -> Any:
    """Returns `cfg` with the field at dotted path `a.b.c` replaced by `value` (coerced).

    A string value is parsed as JSON when it looks like JSON (numbers, lists, booleans),
    so `--set optim.lr=3e-4` and `--set seanet.ratios=[2,2]` both work.
    """
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"cannot set {dotted!r}: {type(cfg).__name__} has no fields")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ConfigError(f"unknown config field {head!r} (have {sorted(fields)})")
    if rest:
        return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, value)})
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    tp = typing.get_type_hints(type(cfg))[head]
    return dataclasses.replace(cfg, **{head: _coerce(tp, value, dotted)})


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str] | None) -> Any:
    """Applies `{"a.b": v}` or `["a.b=v", ...]` overrides in order, *then* validates once:
    fields that must change together (e.g. a width and its head count) can be set by
    consecutive overrides. Unknown fields fail at once, naming the dotted key."""
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else (
        _split_assignment(s) for s in overrides)
    data = to_dict(cfg)
    for key, value in items:
        _assign(type(cfg), data, key, value, key)
    return from_dict(type(cfg), data, type(cfg).__name__)


def _assign(cls: type, data: dict, dotted: str, value: Any, full: str) -> None:
    """Sets `dotted` in the to_dict form `data` of dataclass `cls` (JSON-looking strings
    parsed); coercion and validation are left to from_dict."""
    head, _, rest = dotted.partition(".")
    fields = {f.name for f in dataclasses.fields(cls)}
    if head not in fields:
        raise ConfigError(f"unknown config field {head!r} in {full!r} (have {sorted(fields)})")
    if rest:
        sub = typing.get_type_hints(cls)[head]
        if not dataclasses.is_dataclass(sub) or not isinstance(data[head], dict):
            raise ConfigError(f"cannot set {full!r}: {head!r} has no fields")
        data[head] = dict(data[head])
        _assign(sub, data[head], rest, value, full)
        return
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    data[head] = to_dict(value) if dataclasses.is_dataclass(value) else value


def _split_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form a.b.c=value")
    return key.strip(), value.strip()


def fingerprint(cfg: Any) -> str:
    """A short stable hash of a config (used to refuse mismatched checkpoints)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Human-readable list of differing dotted fields between two configs of one type."""
    da, db = to_dict(a), to_dict(b)
    out: list[str] = []

    def walk(x, y, p):
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{p}.{k}" if p else k)
        elif x != y:
            out.append(f"{p}: {x!r} != {y!r}")

    walk(da, db, prefix)
    return out
