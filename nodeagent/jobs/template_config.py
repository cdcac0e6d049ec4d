"""``[[jobs.template]]``: jobs the operator allows beyond the built-in kinds, as an argv with typed placeholders.

```toml
[[jobs.template]]
name = "sysbench-cpu"
argv = ["sysbench", "cpu", "--threads={threads}", "--time={seconds}", "run"]
timeout_s = 600
heavy = true              # holds the node (one at a time); false: runs beside others, at most jobs.light_max
[jobs.template.params.threads]
type = "int"
min = 1
max = 64
default = 4
```

A ``{name}`` in an argv element is replaced by that parameter's checked value, inside that one element; ``{{`` and
``}}`` stand for literal braces. There is no shell anywhere, so ``;``, ``$( )`` or quotes in a value stay literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nodeagent.jobs.params import ParamSpec, Value, check_spec, render
from nodeagent.protocol.topics import NAME_RE
from nodeagent.protocol.typecheck import FieldError

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


@dataclass(frozen=True)
class JobTemplate:
    """One allowed command: ``name`` is what ``piclusterctl run NAME`` asks for."""

    name: str
    argv: tuple[str, ...]
    params: dict[str, ParamSpec] = field(default_factory=dict)
    timeout_s: float = 3600.0  # the most a job of this template may run; a request may ask for less
    heavy: bool = True  # heavy jobs hold the node: one at a time, with the fan boost and the governor
    diagnostic: bool = False  # light only: may run on a node the thermal guard holds off after a critical spell
    help: str = ""


def placeholders(word: str) -> list[str]:
    """Parameter names used in one argv element; ValueError for a lone brace."""
    names = []
    for m in PLACEHOLDER.finditer(word):
        if m.group(0) in ("{", "}"):
            raise ValueError(f"lone {m.group(0)!r} in {word!r}: write {{{{ or }}}} for a literal brace")
        if m.group(1):
            names.append(m.group(1))
    return names


def fill(word: str, values: Mapping[str, Value]) -> str:
    """One argv element with its placeholders replaced (values already checked)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return render(values[m.group(1)])

    return PLACEHOLDER.sub(sub, word)


def validate_templates(templates: Iterable[JobTemplate], reserved: Iterable[str], path: str = "jobs.template") -> None:
    """Raise FieldError (``jobs.template[1].params.n.default: ...``) for a template that could never run right."""
    seen: set[str] = set()
    reserved = set(reserved)
    for i, tpl in enumerate(templates):
        at = f"{path}[{i}]"
        if not NAME_RE.match(tpl.name):
            raise FieldError(f"{at}.name", f"expected 1-64 letters, digits, '-' or '_', got {tpl.name!r}")
        if tpl.name in reserved:
            raise FieldError(f"{at}.name", f"{tpl.name!r} is a built-in job kind; give the template another name")
        if tpl.name in seen:
            raise FieldError(f"{at}.name", f"a second template named {tpl.name!r}; names must be unique")
        seen.add(tpl.name)
        if not tpl.argv or not tpl.argv[0] or placeholders(tpl.argv[0]):
            raise FieldError(f"{at}.argv", "expected a list whose first element is a fixed program path or name")
        if tpl.timeout_s <= 0:
            raise FieldError(f"{at}.timeout_s", f"expected a number above 0, got {tpl.timeout_s!r}")
        if tpl.diagnostic and tpl.heavy:
            raise FieldError(f"{at}.diagnostic", "a diagnostic template must be light: add heavy = false")
        for name, spec in tpl.params.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise FieldError(f"{at}.params.{name}", "expected a parameter name of letters, digits and '_'")
            check_spec(spec, f"{at}.params.{name}")
        for j, word in enumerate(tpl.argv):
            try:
                used = placeholders(word)
            except ValueError as exc:
                raise FieldError(f"{at}.argv[{j}]", str(exc)) from None
            for name in used:
                if name not in tpl.params:
                    raise FieldError(
                        f"{at}.argv[{j}]",
                        f"{{{name}}} is not a declared parameter; add [jobs.template.params.{name}] with a type",
                    )
