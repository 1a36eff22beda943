"""Validated dataclass configs: every key typed, unknown keys rejected by name.

A config class is a plain ``@dataclass`` whose fields may carry a checker in their
metadata (``checked(default, check=positive)``). ``parse(cls, mapping, where)`` builds
it from a dict (YAML), recursing into nested dataclass fields, and raises ``ConfigError``
naming the dotted key, the bad value and, for unknown keys, the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ConfigError",
    "at_least",
    "checked",
    "finite_non_negative",
    "non_negative",
    "one_of",
    "parse",
    "positive",
    "require_int",
    "to_dict",
]


class ConfigError(ValueError):
    """Bad configuration: the message names the key (dotted path), the value and the fix."""


def checked(
    default: Any = dataclasses.MISSING,
    *,
    check: Callable[[Any], str | None] | None = None,
    doc: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with an optional checker returning an error string (or None)."""
    kwargs: dict[str, Any] = {"metadata": {"check": check, "doc": doc}}
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    else:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def finite_non_negative(v: Any) -> str | None:
    return None if v is None or (v >= 0 and v != float("inf")) else "must be a finite number >= 0"


def non_negative(v: Any) -> str | None:
    return None if v is None or v >= 0 else "must be >= 0"


def require_int(name: str, value: Any, minimum: int = 1) -> None:
    """ValueError naming ``name`` and ``value`` unless ``value`` is an int (not a bool)
    ``>= minimum``: the argument check of the library's functions (batch sizes, lengths,
    limits)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def at_least(n: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v is None or v >= n else f"must be >= {n}"

    return check


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {list(choices)}"

    return check


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the key that is wrong
            return _coerce(value, options[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of {tp.__name__} settings, got {value!r}"
            )
        return parse(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


def parse(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, validating keys, types and checkers."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    flds = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(flds))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; valid keys{' of ' + where if where else ''}: {sorted(flds)}"
        )
    kwargs = {}
    for name, f in flds.items():
        key = f"{prefix}{name}"
        if name in data:
            value = _coerce(data[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]):
            value = parse(hints[name], {}, key)  # a missing section is validated like an empty one
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ConfigError(f"missing required key {key}")
        check = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{key} = {value!r}: {problem}")
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list tree (YAML-serialisable)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
