"""Typed job parameters: the declarations (``[[jobs.template]]`` params and the built-in kinds' own) and the
checks every value from the wire goes through.

A value arrives as what the client sent: a native msgpack scalar, or a string typed on a command line
(``--set workers=2``). ``coerce`` accepts both forms for the declared type and nothing else, so a job's argv only
ever holds values that passed their declaration. Values are placed into argv elements, never into a shell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from nodeagent.errors import JobRejected, echo
from nodeagent.protocol.typecheck import FieldError

ParamType = Literal["int", "float", "str", "bool", "choice"]
Value = int | float | str | bool
MAX_STR_LEN = 4096
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type, limits and default (``None``: the parameter is required)."""

    type: ParamType = "str"
    default: Value | None = None
    min: float | None = None  # int, float: inclusive bounds
    max: float | None = None
    choices: tuple[str, ...] = ()  # choice: the allowed values
    pattern: str = ""  # str: a regular expression the whole value must match
    help: str = ""


def coerce(spec: ParamSpec, value: object, name: str) -> Value:
    """``value`` as the declared type, within its limits; raise ValueError saying what was expected."""
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (*_TRUE, *_FALSE):
            return value.lower() in _TRUE
        raise ValueError(f"expected true or false, got {echo(value)}")
    if spec.type in ("int", "float"):
        number = _number(spec.type, value)
        if spec.min is not None and number < spec.min:
            raise ValueError(f"expected at least {spec.min:g}, got {echo(number)}")
        if spec.max is not None and number > spec.max:
            raise ValueError(f"expected at most {spec.max:g}, got {echo(number)}")
        return number
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {echo(value)}")
    if spec.type == "choice":
        if value not in spec.choices:
            raise ValueError(f"expected one of {', '.join(spec.choices)}, got {echo(value)}")
        return value
    if "\0" in value or len(value) > MAX_STR_LEN:
        raise ValueError(f"expected a string without NUL bytes and at most {MAX_STR_LEN} characters")
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        raise ValueError(f"expected a value matching {spec.pattern!r}, got {echo(value)}")
    return value


def _number(kind: str, value: object) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"expected {'a whole number' if kind == 'int' else 'a number'}, got {echo(value)}")
    if kind == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
            return int(value)
        raise ValueError(f"expected a whole number, got {echo(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {echo(value)}") from None
    else:
        raise ValueError(f"expected a number, got {echo(value)}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {echo(value)}")
    return number


def resolve(specs: Mapping[str, ParamSpec], params: Mapping[str, object], what: str) -> dict[str, Value]:
    """Every declared parameter, from ``params`` or its default; JobRejected naming the first bad one.

    ``what`` names the kind or template in messages. Undeclared parameters are refused: a typo must not be
    silently ignored and run a job the operator did not ask for.
    """
    refuse_undeclared(params, specs, what)
    out: dict[str, Value] = {}
    for name, spec in specs.items():
        if name not in params:
            if spec.default is None:
                raise JobRejected(f"{what}: parameter {name!r} is required ({describe(spec)})", f"params.{name}")
            out[name] = spec.default
            continue
        try:
            out[name] = coerce(spec, params[name], name)
        except ValueError as exc:
            raise JobRejected(f"{what}: parameter {name!r}: {exc}", f"params.{name}") from None
    return out


def refuse_undeclared(params: Mapping[str, object], declared: Iterable[str], what: str) -> None:
    """JobRejected naming the first parameter of ``params`` that is not ``declared`` (with the declared ones)."""
    names = list(declared)
    unknown = sorted(set(params) - set(names))
    if unknown:
        known = ", ".join(names) or "none"
        raise JobRejected(f"{what}: unknown parameter {echo(unknown[0])} (parameters: {known})", f"params.{unknown[0]}")


def describe(spec: ParamSpec) -> str:
    """``int from 1 to 86400``, ``one of cpu, vm`` ... for messages and ``piclusterctl`` help."""
    if spec.type == "choice":
        return "one of " + ", ".join(spec.choices)
    if spec.type in ("int", "float"):
        word = "a whole number" if spec.type == "int" else "a number"
        if spec.min is not None and spec.max is not None:
            return f"{word} from {spec.min:g} to {spec.max:g}"
        if spec.min is not None:
            return f"{word} of at least {spec.min:g}"
        if spec.max is not None:
            return f"{word} of at most {spec.max:g}"
        return word
    return "true or false" if spec.type == "bool" else "a string"


def check_spec(spec: ParamSpec, path: str) -> None:
    """A declaration that can never accept a value is a config error: raise FieldError naming the key and fix."""
    if spec.type in ("int", "float"):
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise FieldError(f"{path}.max", f"expected a number at least min ({spec.min:g}), got {spec.max:g}")
    elif spec.min is not None or spec.max is not None:
        raise FieldError(f"{path}.min", f"min and max apply to int and float parameters, not {spec.type}")
    if spec.type == "choice" and not spec.choices:
        raise FieldError(f"{path}.choices", 'a choice parameter needs choices, e.g. choices = ["a", "b"]')
    if spec.type != "choice" and spec.choices:
        raise FieldError(f"{path}.choices", f'choices apply to type = "choice", not {spec.type!r}')
    if spec.pattern:
        if spec.type != "str":
            raise FieldError(f"{path}.pattern", f"pattern applies to str parameters, not {spec.type}")
        try:
            re.compile(spec.pattern)
        except re.error as exc:
            raise FieldError(f"{path}.pattern", f"not a valid regular expression: {exc}") from None
    if spec.default is not None:
        try:
            coerce(spec, spec.default, path)
        except ValueError as exc:
            raise FieldError(f"{path}.default", f"{exc} (the default must itself be a valid value)") from None
        if spec.type in ("str", "choice") and not isinstance(spec.default, str):
            raise FieldError(f"{path}.default", f"expected a string, got {spec.default!r}")


def render(value: Value) -> str:
    """A parameter as one argv word: ints plainly, floats without a trailing .0 noise, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)
