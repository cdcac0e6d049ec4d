"""How the docs' tables write a default: the TOML a user would type (``unset`` where TOML has no way to say None)."""

from __future__ import annotations

import dataclasses


def toml_default(value: object) -> str:
    if value is None:
        return "unset"  # TOML has no null: an optional key without a default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_default(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return "{" + ", ".join(f"{f.name} = {toml_default(getattr(value, f.name))}" for f in fields) + "}"
    return repr(value)
