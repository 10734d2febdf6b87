"""Typed config fields: the error that names a field, checks, and a section built from YAML."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A bad value in params.yaml or a preset; the message names the field."""


def check(ok: bool, name: str, message: str) -> None:
    """Raise ConfigError naming `name` unless `ok`."""
    if not ok:
        raise ConfigError(f"{name}: {message}")


def build(cls: type, data: Any, name: str) -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key; known keys: {sorted(known)}")
    missing = sorted(known - set(data))
    if missing:
        raise ConfigError(f"{name}.{missing[0]}: missing; the preset must give every key")
    values = {key: coerce(hints[key], value, f"{name}.{key}") for key, value in data.items()}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(name)
    return obj


def coerce(tp: Any, value: Any, name: str) -> Any:
    """`value` as type `tp` (a dataclass, optional, tuple, bool, int, float or str)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, name)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value):  # no setting means "infinite"; NaN slips past range checks
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{name}: unsupported type {tp}")  # a bug in this module, not in params
