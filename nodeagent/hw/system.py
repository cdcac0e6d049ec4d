"""Memory, load average and what the node is (model, serial, cores, board), from procfs and the device tree.

Per tick the agent reads ``/proc/meminfo`` and ``/proc/loadavg``; everything else here is read once for ``Facts``.
The carrier board cannot be seen from a CM5's device tree (the firmware reports the module, e.g.
``Raspberry Pi Compute Module 5 Rev 1.0``, whatever it is plugged into), so a CM5 is ``generic`` unless the
configuration names its board or the model/compatible strings carry a carrier's name (a custom device tree).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw.base import Facts
from nodeagent.hw.root import SysfsRoot, read_text_file

log = logging.getLogger(__name__)

MEMINFO = "proc/meminfo"
LOADAVG = "proc/loadavg"
BOARDS: tuple[str, ...] = ("compute-blade", "nanocluster", "cm5-io-board", "pi5", "generic")

# The canonical place first: /proc/device-tree is an absolute symlink to it on a node, which would point out of
# a recorded tree if an operator copied the link rather than the files.
_DT_DIRS = ("sys/firmware/devicetree/base", "proc/device-tree")
# Substrings of the model or compatible strings that name a carrier, checked in this order.
_CARRIER_HINTS: tuple[tuple[str, str], ...] = (
    ("compute blade", "compute-blade"),
    ("compute-blade", "compute-blade"),
    ("computeblade", "compute-blade"),
    ("nanocluster", "nanocluster"),
    ("cm5 io board", "cm5-io-board"),
    ("cm5io", "cm5-io-board"),
)
_LOADAVG = re.compile(r"(\d+\.\d+) (\d+\.\d+) (\d+\.\d+) \d+/\d+ \d+")
_MEMINFO_NEEDED = frozenset({"MemTotal", "MemAvailable"})
_MEMINFO_LINE = re.compile(r"([^:\s]+):\s*(\d+)(?: kB)?")


def parse_meminfo(text: str, names: Collection[str] = ()) -> dict[str, int]:
    """``/proc/meminfo`` as ``{"MemTotal": 8245360, ...}`` in kB (page counts such as ``HugePages_Total`` as is).

    With ``names``, only those lines are parsed and the scan stops once all are found: the agent needs two of
    about fifty lines every tick. Raises ``ValueError`` when a parsed line is not ``Name: number [kB]``.
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        if names and line.partition(":")[0] not in names:
            continue
        if not line.strip():
            continue
        match = _MEMINFO_LINE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"unexpected line {line[:60]!r}")
        fields[match.group(1)] = int(match.group(2))
        if names and len(fields) == len(names):
            break
    return fields


def meminfo_mb(fields: dict[str, int]) -> tuple[int, int]:
    """``(total_mb, available_mb)`` from parsed meminfo; raises ``ValueError`` when either field is missing."""
    try:
        return fields["MemTotal"] // 1024, fields["MemAvailable"] // 1024
    except KeyError as e:
        raise ValueError(f"no {e.args[0]} line") from None


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages from ``/proc/loadavg`` (``0.52 0.58 0.59 1/189 12345``)."""
    match = _LOADAVG.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected 'l1 l5 l15 running/total lastpid', got {text[:60]!r}")
    return float(match.group(1)), float(match.group(2)), float(match.group(3))


def parse_cpu_list(text: str) -> int:
    """How many CPUs a kernel CPU list names (``0-3`` -> 4, ``0,2-5`` -> 5)."""
    count = 0
    for part in text.strip().split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not (last.isdigit() and int(last) >= int(first))):
            raise ValueError(f"expected a CPU list such as '0-3', got {text[:40]!r}")
        count += int(last) - int(first) + 1 if dash else 1
    return count


def check_board(board: str) -> str:
    """``board`` if it is ``auto`` or one of ``BOARDS``; otherwise ``ConfigError`` naming it and the choices."""
    if board != "auto" and board not in BOARDS:
        raise ConfigError(f"board: expected auto or one of {', '.join(BOARDS)}, got {board!r}")
    return board


def detect_board(model: str, compatible: Sequence[str], *, configured: str = "auto") -> str:
    """The board profile: one of ``BOARDS``.

    ``configured`` (the ``board`` config key) wins unless it is ``auto``. Otherwise a carrier named in the
    model or compatible strings, then ``pi5`` for a Raspberry Pi 5, else ``generic`` (a bare CM5 included:
    its carrier is invisible to software, so set ``board`` in the configuration).
    """
    if check_board(configured) != "auto":
        return configured
    text = " ".join([model, *compatible]).lower()
    for needle, board in _CARRIER_HINTS:
        if needle in text:
            return board
    if "raspberry pi 5" in text or "raspberrypi,5-model-b" in text:
        return "pi5"
    return "generic"


class Memory:
    """Total and available memory in MB from ``/proc/meminfo``."""

    def __init__(self, root: SysfsRoot) -> None:
        self.path = str(root.path(MEMINFO))

    def read_mb(self) -> tuple[int, int]:
        """``(total_mb, available_mb)``; raises ``HardwareError`` naming the path when unreadable or garbage."""
        text = read_text_file(self.path)
        try:
            return meminfo_mb(parse_meminfo(text, _MEMINFO_NEEDED))
        except ValueError as e:
            raise HardwareError(f"{self.path}: {e}") from e


class LoadAverage:
    """The 1-minute load average from ``/proc/loadavg``."""

    def __init__(self, root: SysfsRoot) -> None:
        self.path = str(root.path(LOADAVG))

    def read_load1(self) -> float:
        """The 1-minute load average; raises ``HardwareError`` naming the path when unreadable or garbage."""
        text = read_text_file(self.path)
        try:
            return parse_loadavg(text)[0]
        except ValueError as e:
            raise HardwareError(f"{self.path}: {e}") from e


def device_tree_strings(root: SysfsRoot, prop: str) -> tuple[str, ...]:
    """A device-tree string-list property (``compatible``), or ``()`` when there is no device tree."""
    for base in _DT_DIRS:
        try:
            text = root.read_text(f"{base}/{prop}")
        except HardwareError:
            continue
        return tuple(s for s in text.split("\0") if s)
    return ()


def device_tree_model(root: SysfsRoot) -> str:
    """The device-tree ``model`` (``Raspberry Pi Compute Module 5 Rev 1.0``), or ``""`` without a device tree."""
    return " ".join(device_tree_strings(root, "model"))


def read_facts(root: SysfsRoot, *, board: str = "auto") -> Facts:
    """What this node is. A fact that cannot be read is logged and left empty (0 for numbers), never raised."""
    model = device_tree_model(root) or _first_line(root, "sys/devices/virtual/dmi/id/product_name")
    compatible = device_tree_strings(root, "compatible")
    memory_mb = 0
    try:
        memory_mb = Memory(root).read_mb()[0]
    except HardwareError as e:
        log.warning("hw fact unreadable fact=memory_mb error=%r", str(e))
    return Facts(
        board=detect_board(model, compatible, configured=board),
        model=model,
        serial=_serial(root),
        cores=_cores(root),
        memory_mb=memory_mb,
        cpu=_cpu_name(root),
        hostname=_first_line(root, "proc/sys/kernel/hostname"),
    )


def _first_line(root: SysfsRoot, rel: str) -> str:
    try:
        return root.read_text(rel).splitlines()[0].strip()
    except (HardwareError, IndexError):
        return ""


def _cpuinfo_field(root: SysfsRoot, name: str) -> str:
    """The first ``name : value`` in /proc/cpuinfo, or ``""``."""
    try:
        text = root.read_text("proc/cpuinfo")
    except HardwareError:
        return ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def _serial(root: SysfsRoot) -> str:
    serial = " ".join(device_tree_strings(root, "serial-number"))
    return serial or _cpuinfo_field(root, "Serial")


def _cores(root: SysfsRoot) -> int:
    cores = sum(1 for p in root.glob("sys/devices/system/cpu/cpu*") if p.name[3:].isdigit() and p.is_dir())
    if cores:
        return cores
    try:
        return parse_cpu_list(root.read_text("sys/devices/system/cpu/possible"))
    except (HardwareError, ValueError) as e:
        log.warning("hw fact unreadable fact=cores error=%r", str(e))
        return 0


def _cpu_name(root: SysfsRoot) -> str:
    """``Cortex-A76`` from the device tree's first CPU (``arm,cortex-a76``), else cpuinfo's ``model name`` (PCs)."""
    for compatible in device_tree_strings(root, "cpus/cpu@0/compatible"):
        name = compatible.partition(",")[2] or compatible
        if name.startswith("cortex-"):
            return "Cortex-" + name.removeprefix("cortex-").upper()
        return name
    return _cpuinfo_field(root, "model name")
