"""The bootloader's EEPROM configuration (Pi 4/5, CM4/CM5), as ``rpi-eeprom-config`` prints it: read and parse.

``rpi-eeprom-config`` with no arguments prints the running bootloader's configuration. It uses the config.txt
syntax: ``KEY=VALUE`` lines, ``#`` comments and ``[filter]`` lines. ``[all]`` applies to every board, and
``[none]`` to none. A model filter (``[cm5]``, ``[pi5]``, ``[cm4]``, ``[pi4]``…) applies to that model and
replaces the model filter before it. Other filters (``[gpio7=0]``, ``[partition=62]``, ``[tryboot]``, a serial
number) depend on the boot, so they cannot be judged from here. Filters of different kinds combine until the
next ``[all]``. Everything after a ``[config.txt]`` line is config.txt text that the firmware appends; it holds
no bootloader settings. ``parse_boot_config`` is pure; ``read_boot_config`` runs the binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

BINARY = "rpi-eeprom-config"
INSTALL_HINT = "apt install rpi-eeprom"
MAX_OUTPUT_CHARS = 64 * 1024  # a real configuration is a few hundred bytes; anything near this is not one
MAX_LINES = 2000
TIMEOUT_S = 10.0

# Which model filters a board family sees (the config.txt filter table: a CM4 also sees [pi4], and so on).
MODEL_FILTERS: dict[str, frozenset[str]] = {
    "pi4": frozenset({"pi4"}),
    "pi400": frozenset({"pi4", "pi400"}),
    "cm4": frozenset({"pi4", "cm4"}),
    "pi5": frozenset({"pi5"}),
    "pi500": frozenset({"pi5", "pi500"}),
    "cm5": frozenset({"pi5", "cm5"}),
}
KNOWN_MODEL_FILTERS = frozenset().union(*MODEL_FILTERS.values()) | {"pi0", "pi0w", "pi02", "pi1", "pi2", "pi3", "cm4s"}


@dataclass(frozen=True)
class Setting:
    """One ``KEY=VALUE`` line and the filters in force above it."""

    key: str
    value: str
    line: int  # 1-based line number in the output
    model: str | None = None  # the model filter in force, lower case (None: none since [all])
    conditions: tuple[str, ...] = ()  # other filters in force, as written (gpio, partition, tryboot, …)
    disabled: bool = False  # under [none]

    def applies(self, family: str) -> bool | None:
        """True when this line applies to a board of ``family``, False when it cannot, None when it depends on
        the boot (a gpio, partition or similar filter)."""
        if self.disabled or (self.model is not None and self.model not in MODEL_FILTERS.get(family, ())):
            return False
        return None if self.conditions else True

    @property
    def section(self) -> str:
        """The filters in force, as ``[cm5][gpio7=0]`` (``[all]`` for none)."""
        parts = (["none"] if self.disabled else []) + ([self.model] if self.model else []) + list(self.conditions)
        return "".join(f"[{p}]" for p in parts) or "[all]"


@dataclass(frozen=True)
class BootConfig:
    """A parsed configuration: every bootloader setting in order, and the lines that were not understood."""

    settings: tuple[Setting, ...] = ()
    unparsed: tuple[tuple[int, str], ...] = ()  # (line number, text) of lines that are neither
    config_txt_lines: int = 0  # lines after [config.txt]: the firmware appends them to config.txt

    def effective(self, family: str) -> dict[str, Setting]:
        """The setting of each key that certainly applies to ``family``, the last one winning."""
        out: dict[str, Setting] = {}
        for s in self.settings:
            if s.applies(family):
                out[s.key] = s
        return out

    def undetermined(self, family: str, key: str) -> tuple[Setting, ...]:
        """Lines setting ``key`` under a filter that depends on the boot (gpio, partition…)."""
        return tuple(s for s in self.settings if s.key == key and s.applies(family) is None)


def parse_boot_config(text: str) -> BootConfig:
    """Parse ``rpi-eeprom-config`` output. Never raises: a line it cannot read goes to ``unparsed``."""
    settings: list[Setting] = []
    unparsed: list[tuple[int, str]] = []
    model: str | None = None
    conditions: list[str] = []
    disabled = False
    lines = text.splitlines()
    for number, raw in enumerate(lines[:MAX_LINES], start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            low = name.lower()
            if low == "config.txt":
                return BootConfig(tuple(settings), tuple(unparsed), len(lines) - number)
            if low == "all":
                model, conditions, disabled = None, [], False
            elif low == "none":
                disabled = True
            elif low in KNOWN_MODEL_FILTERS:
                model = low  # filters of one kind replace each other
            else:
                conditions.append(name)
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            unparsed.append((number, line[:120]))
            continue
        settings.append(Setting(key, value.strip(), number, model, tuple(conditions), disabled))
    if len(lines) > MAX_LINES:
        unparsed.append((MAX_LINES + 1, f"… {len(lines) - MAX_LINES} more lines not read"))
    return BootConfig(tuple(settings), tuple(unparsed))


@dataclass(frozen=True)
class EepromRead:
    """What running ``rpi-eeprom-config`` gave: its output, or why there is none."""

    text: str | None
    error: str | None = None
    binary: str | None = None  # the path that ran


def read_boot_config(binary: str = BINARY, *, timeout_s: float = TIMEOUT_S) -> EepromRead:
    """Run ``binary`` (found on PATH) with no arguments; its output, or an error naming the cause and the fix."""
    path = shutil.which(binary)
    if path is None:
        return EepromRead(None, f"{binary} not found on PATH, so the bootloader settings were not read: {INSTALL_HINT}")
    env = {**os.environ, "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            [path],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return EepromRead(None, f"{path} gave no answer within {timeout_s:g} s", path)
    except OSError as e:
        return EepromRead(None, f"{path} could not run: {e.strerror or e}", path)
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        why = said[-1][:200] if said else "no message"
        return EepromRead(
            None, f"{path} failed (exit {proc.returncode}: {why}): run check as root (it reads the firmware)", path
        )
    return EepromRead(proc.stdout[:MAX_OUTPUT_CHARS], None, path)


__all__ = [
    "BINARY",
    "INSTALL_HINT",
    "MODEL_FILTERS",
    "BootConfig",
    "EepromRead",
    "Setting",
    "parse_boot_config",
    "read_boot_config",
]
