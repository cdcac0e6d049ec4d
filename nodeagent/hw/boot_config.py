"""Are this node's bootloader (EEPROM) settings right for a cluster? For ``picluster-agent check``.

Three settings matter (Raspberry Pi's bootloader documentation gives the meanings and defaults):

- ``POWER_OFF_ON_HALT``: 1 turns every PMIC output off at halt. It defaults to **1 on a CM5** (and on the
  keyboard models) and to 0 otherwise. On a Pi 4 / CM4 it acts only with ``WAKE_ON_GPIO=0``. A node switched
  off that way boots again only from its power button or a full power cycle. A NanoCluster slot's power pulse
  from slot 1 is neither, so a shut-down CM5 in a slot stays off (sipeed/NanoCluster #14). On a slot-powered
  node this is a problem to fix; elsewhere it is a note.
- ``BOOT_WATCHDOG_TIMEOUT``: seconds after which the bootloader resets a boot that has not started the OS (0,
  the default, is off). It is cancelled once the OS starts. Off is a note: a cluster node stuck in a failed NVMe
  or network boot stays stuck until someone power-cycles it.
- ``PSU_MAX_CURRENT`` (Pi 5 family only): the supply's rating in mA, which skips USB-PD negotiation. Unset is a
  note for a node whose supply cannot negotiate (a carrier's 5 V rail, PoE): the firmware may then limit USB
  current.

``judge`` is pure (settings in, findings out). ``check_boot_config`` reads the EEPROM through
``nodeagent.hw.eeprom`` and judges what it read; ``print_boot_config`` prints the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO

from nodeagent.hw.eeprom import BINARY, BootConfig, parse_boot_config, read_boot_config

Level = Literal["ok", "note", "problem"]
FIX = "sudo rpi-eeprom-config --edit"
SLOT_POWERED_BOARDS = frozenset({"nanocluster"})  # slot power comes as pulses on the module's reset/enable lines
WATCHDOG_SUGGESTED_S = 60


@dataclass(frozen=True)
class Finding:
    """One setting's verdict: its value (as set, or the family's default) and what it means here."""

    key: str
    value: str
    source: Literal["eeprom", "default"]
    level: Level
    text: str


@dataclass(frozen=True)
class BootCheck:
    """The whole check: where the settings came from, the findings, and the problems ``check`` counts."""

    status: str
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "findings": [asdict(f) for f in self.findings],
            "notes": list(self.notes),
        }


def family_of(model: str) -> str | None:
    """The bootloader family of a device-tree model string; None for a board without an EEPROM bootloader."""
    m = model.lower()
    table = (
        ("compute module 5", "cm5"),
        ("raspberry pi 500", "pi500"),
        ("raspberry pi 5", "pi5"),
        ("compute module 4s", None),  # the CM4S boots like a CM3: no EEPROM
        ("compute module 4", "cm4"),
        ("raspberry pi 400", "pi400"),
        ("raspberry pi 4", "pi4"),
    )
    for needle, family in table:
        if needle in m:
            return family
    return None


def _int(value: str) -> int | None:
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None


def _value(settings: Mapping[str, str], key: str, default: str) -> tuple[str, Literal["eeprom", "default"]]:
    return (settings[key], "eeprom") if key in settings else (default, "default")


def judge(settings: Mapping[str, str], family: str, board: str) -> tuple[Finding, ...]:
    """The verdicts for a node of bootloader ``family`` on ``board`` whose EEPROM sets ``settings``."""
    return tuple(
        f
        for f in (
            _power_off_on_halt(settings, family, board),
            _boot_watchdog(settings),
            _psu_max_current(settings, family, board),
        )
        if f is not None
    )


def _power_off_on_halt(settings: Mapping[str, str], family: str, board: str) -> Finding:
    key = "POWER_OFF_ON_HALT"
    value, source = _value(settings, key, "1" if family in ("cm5", "pi500", "pi400") else "0")
    n = _int(value)
    if n not in (0, 1):
        return Finding(key, value, source, "problem", f"expected 0 or 1: fix it with `{FIX}`")
    wake = _int(settings.get("WAKE_ON_GPIO", "1"))
    acts = n == 1 and (family not in ("pi4", "pi400", "cm4") or wake == 0)
    if not acts:
        return Finding(key, value, source, "ok", "a halted node keeps its PMIC on; a reset or power pulse boots it")
    default = " (the default on this model)" if source == "default" else ""
    if board in SLOT_POWERED_BOARDS:
        return Finding(
            key,
            value,
            source,
            "problem",
            f"is 1{default}: after a shutdown the PMIC is off and a slot power pulse will not boot this node; "
            f"run `{FIX}`, set POWER_OFF_ON_HALT=0, and reboot",
        )
    return Finding(
        key,
        value,
        source,
        "note",
        f"is 1{default}: a shut-down node boots again only from its power button or a full power cycle "
        "(on a Compute Blade, its PoE port)",
    )


def _boot_watchdog(settings: Mapping[str, str]) -> Finding:
    key = "BOOT_WATCHDOG_TIMEOUT"
    value, source = _value(settings, key, "0")
    n = _int(value)
    if n is None or n < 0:
        return Finding(key, value, source, "problem", f"expected whole seconds (0 = off): fix it with `{FIX}`")
    if n == 0:
        return Finding(
            key,
            value,
            source,
            "note",
            "off: a boot that hangs (NVMe or network) waits for someone to power-cycle the node; "
            f"BOOT_WATCHDOG_TIMEOUT={WATCHDOG_SUGGESTED_S} has the bootloader reset it (`{FIX}`)",
        )
    return Finding(key, value, source, "ok", f"the bootloader resets a boot that has not started the OS in {n} s")


def _psu_max_current(settings: Mapping[str, str], family: str, board: str) -> Finding | None:
    key = "PSU_MAX_CURRENT"
    if family not in ("pi5", "pi500", "cm5"):
        return None  # a Pi 5 family setting
    value, source = _value(settings, key, "")
    if source == "default" or value == "":
        if board == "pi5":
            return Finding(key, "unset", source, "ok", "the firmware asks the USB-C supply for its rating (USB-PD)")
        return Finding(
            key,
            "unset",
            source,
            "note",
            "the firmware cannot ask this node's supply for its rating: if it gives 5 A, set PSU_MAX_CURRENT=5000 "
            f"(`{FIX}`), or USB current may be limited",
        )
    n = _int(value)
    if n is None or n <= 0:
        return Finding(key, value, source, "problem", f"expected milliamps (3000 or 5000): fix it with `{FIX}`")
    if n < 5000:
        return Finding(key, value, source, "note", f"the firmware assumes a {n} mA supply and may limit USB current")
    return Finding(key, value, source, "ok", f"the firmware assumes a {n} mA supply")


def judge_config(config: BootConfig, family: str, board: str) -> BootCheck:
    """Judge a parsed configuration: the findings, plus notes on lines the verdicts could not take into account."""
    effective = config.effective(family)
    findings = judge({k: s.value for k, s in effective.items()}, family, board)
    notes = [f"line {n} not understood: {text!r}" for n, text in config.unparsed]
    for f in findings:
        for s in config.undetermined(family, f.key):
            notes.append(f"{f.key}={s.value} also set under {s.section} (line {s.line}): depends on the boot")
    problems = tuple(f"boot: {f.key}={f.value}: {f.text}" for f in findings if f.level == "problem")
    return BootCheck("read from the EEPROM", findings, tuple(notes), problems)


def check_boot_config(model: str, board: str, *, simulated: bool = False, binary: str = BINARY) -> BootCheck:
    """Read and judge this node's bootloader settings. A board without an EEPROM bootloader, or the simulator,
    is not checked. A missing or failing ``rpi-eeprom-config`` is a problem that says how to fix it."""
    if simulated:
        return BootCheck("not checked: simulated node")
    if not model:
        return BootCheck("not checked: the device-tree model is unknown")
    family = family_of(model)
    if family is None:
        return BootCheck(f"not checked: {model or 'this board'} has no EEPROM bootloader")
    read = read_boot_config(binary)
    if read.text is None:
        return BootCheck(f"not read: {read.error}", problems=(f"boot: {read.error}",))
    return judge_config(parse_boot_config(read.text), family, board)


def print_boot_config(data: Mapping[str, Any], out: TextIO) -> None:
    """The ``boot config`` section of ``check``'s text report, from ``BootCheck.as_dict()``."""
    print(f"\nboot config (EEPROM): {data['status']}", file=out)
    for f in data["findings"]:
        where = "" if f["source"] == "eeprom" else " (default)"
        print(f"  {f['key']:<22} {f['value']}{where}  {f['level']}: {f['text']}", file=out)
    for note in data["notes"]:
        print(f"  note: {note}", file=out)
