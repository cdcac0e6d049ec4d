"""Check untrusted values (TOML tables, msgpack maps) against dataclass field annotations.

One checker serves both the config loader and the wire protocol, so "expected X, got Y" reads the same everywhere.
Supported annotations: str, int, float, bool, None unions, ``tuple[T, ...]``, ``dict[str, T]``, Literal, nested
frozen dataclasses (built from a mapping), and ``object`` (anything msgpack can carry).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class FieldError(ValueError):
    """A value does not fit its annotation. ``path`` is the dotted key (``fan.curve[2].temp_c``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def describe(tp: Any) -> str:
    """Human words for an annotation: ``a number``, ``a list of strings``, ``one of "auto", "real"``."""
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is object or tp is Any:
        return "any value"
    if tp is type(None):
        return "nothing"
    if origin is Literal:
        return "one of " + ", ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_plural(describe(get_args(tp)[0]))}"
    if origin in (dict, Mapping):
        return f"a table of {_plural(describe(get_args(tp)[1]))}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _plural(words: str) -> str:
    for article in ("a ", "an "):
        if words.startswith(article):
            words = words[len(article) :]
            return words if words.endswith("s") or " " in words else words + "s"
    return words


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    if value is None:
        return "nothing"
    return type(value).__name__


_SCALARS = frozenset((bool, int, str))  # a value of exactly one of these types fits that arm as it is (not float: NaN)


def check(value: Any, tp: Any, path: str = "") -> Any:
    """Return ``value`` converted to ``tp`` (lists -> tuples, mappings -> dataclasses) or raise FieldError."""
    origin = get_origin(tp)
    if tp is object or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise FieldError(path, f"expected a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
    elif origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        if type(value) in args and type(value) in _SCALARS:
            return value  # the arm of the value's own type, without failing the others first (Scalar's str)
        deeper: FieldError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check(value, arg, path)
            except FieldError as exc:
                # An arm that got inside the value (a table with one bad key) explains the failure best.
                if exc.path != path and deeper is None:
                    deeper = exc
        if deeper is not None:
            raise deeper
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            (item_tp, *_rest) = get_args(tp)
            if item_tp is str and all(type(v) is str for v in value):
                return tuple(value)  # the common case (node names, argv) without a check and a path per item
            return tuple(check(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    elif origin in (dict, Mapping):
        if isinstance(value, Mapping):
            _key_tp, val_tp = get_args(tp)
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise FieldError(path, f"expected string keys, got {_got(k)}")
                out[k] = check(v, val_tp, f"{path}.{k}" if path else k)
            return out
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build(tp, value, path, strict=True)
    else:  # pragma: no cover - a programming error, not bad input
        raise TypeError(f"unsupported annotation {tp!r} at {path}")
    raise FieldError(path, f"expected {describe(tp)}, got {_got(value)}")


def build(
    cls: type,
    data: Mapping[str, Any],
    path: str = "",
    *,
    strict: bool,
    validators: Mapping[str, Callable[[Any], str | None]] | None = None,
) -> Any:
    """Build dataclass ``cls`` from ``data``. Missing fields take their defaults (or raise when required).

    ``strict`` makes unknown keys an error with a did-you-mean (config files); the wire ignores them.
    """
    hints, fields = _shape(cls)
    if strict:
        for key in data:
            if key not in fields:
                raise unknown_key(str(key), list(fields), path)
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = check(data[name], hints[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FieldError(key_path, f"missing; expected {describe(hints[name])}")
    obj = cls(**kwargs)
    for name, validate in (validators or {}).items():
        problem = validate(getattr(obj, name))
        if problem:
            raise FieldError(_join(path, name), problem)
    return obj


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A dataclass's resolved annotations and its init fields. Resolving the annotations (strings, under
    ``from __future__ import annotations``) was most of the cost of decoding a message; a class never changes."""
    return get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def unknown_key(key: str, known: list[str], path: str = "") -> FieldError:
    """The error for a key that is not one of ``known``, with the closest known key as a suggestion."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else f" (known keys: {', '.join(known)})"
    return FieldError(_join(path, key), f"unknown key{hint}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unwrap_optional(tp: Any) -> Any:
    """``int | None`` -> ``int``; anything else unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


__all__ = ["FieldError", "build", "check", "describe", "unknown_key", "unwrap_optional"]
