"""PCIe link training and AER error counters of every PCI device: is the link at its maximum, are errors rising.

On a CM5 the external x1 port carries the NVMe drive. It is certified for Gen 2 (5 GT/s); ``dtparam=pciex1_gen=3``
asks for Gen 3 (8 GT/s), which some drives and cables do not hold. Two facts tell the operator it is going wrong:

- the link trained below what both ends can do (``current_link_speed`` < ``max_link_speed``, or a narrower
  width): ``PcieLink.degraded``;
- the AER counters grow (``aer_dev_correctable`` / ``_nonfatal`` / ``_fatal`` on each device, the
  ``aer_rootport_total_err_*`` totals on root ports): ``PcieSample.increase`` since the previous reading, and
  ``PcieReading.rising`` naming the severities that grew anywhere.

The AER files list one ``<name> <count>`` line per error bit and a ``TOTAL_ERR_*`` line. The names changed with
the kernel (4.19 ``Receiver Error 2``, current ``RxErr 2``), so they are parsed generically: everything before
the last space is the name, kept as the kernel wrote it. The per-type counts (``aer_types``) are what tell a
flaky link (``RxErr``, ``BadTLP``, ``BadDLLP``, ``Timeout`` climbing) from a device that fails to answer
(``CmpltTO``, ``UnsupReq``, ``CmpltAbrt``); docs/hardware.md has the table. A file is bounded: at most
``MAX_AER_COUNTERS`` lines of printable names up to ``MAX_AER_NAME`` characters and 64-bit counts.

Devices are found once from ``sys/bus/pci/devices`` (``rescan()`` after a hot-plug); a tick reads a fixed list
of files and never globs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from nodeagent.errors import HardwareError
from nodeagent.hw.events import HwEvent
from nodeagent.hw.root import SysfsRoot, read_text_file

log = logging.getLogger(__name__)
T = TypeVar("T")

PCI_DEVICES_DIR = "sys/bus/pci/devices"
SEVERITIES: tuple[str, ...] = ("correctable", "nonfatal", "fatal")
DEVICE_AER_FILES = {"correctable": "aer_dev_correctable", "nonfatal": "aer_dev_nonfatal", "fatal": "aer_dev_fatal"}
ROOTPORT_AER_FILES = {
    "correctable": "aer_rootport_total_err_cor",
    "nonfatal": "aer_rootport_total_err_nonfatal",
    "fatal": "aer_rootport_total_err_fatal",
}
LINK_FILES = ("current_link_speed", "max_link_speed", "current_link_width", "max_link_width")
TOTAL_PREFIX = "TOTAL_ERR_"
MAX_AER_COUNTERS = 64  # kernels print 8 correctable and up to 23 uncorrectable names, plus the total
MAX_AER_NAME = 64  # the longest 4.19 name, "Uncorrectable Internal Error", is 28
MAX_COUNT = 2**64 - 1  # the kernel prints u64 counters (%llu)

_BDF = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
# pci_speed_string(): "8.0 GT/s PCIe" since 5.7; "8 GT/s" (no suffix, no ".0") before.
_SPEED = re.compile(r"([0-9]+(?:\.[0-9]+)?) GT/s(?: PCIe)?")
_COUNT = re.compile(r"[0-9]+")


def parse_link_speed(text: str) -> float | None:
    """GT/s from a ``*_link_speed`` file (``"5.0 GT/s PCIe"``, ``"5 GT/s"`` -> 5.0); None for ``"Unknown"``
    (the link is down). Raises ``ValueError`` on anything else."""
    stripped = text.strip()
    if stripped.startswith("Unknown"):  # "Unknown" now, "Unknown speed" on old kernels
        return None
    match = _SPEED.fullmatch(stripped)
    if match is None:
        raise ValueError(f"expected a link speed such as '5.0 GT/s PCIe', got {text[:40]!r}")
    return float(match.group(1))


def parse_link_width(text: str) -> int:
    """Lanes from a ``*_link_width`` file (``"1"``; 0 when the link is down). Raises ``ValueError`` on garbage."""
    stripped = text.strip()
    if not _COUNT.fullmatch(stripped) or int(stripped) > 32:
        raise ValueError(f"expected a link width of 0-32 lanes, got {text[:40]!r}")
    return int(stripped)


def parse_aer_counters(text: str) -> dict[str, int]:
    """The ``<name> <count>`` lines of an ``aer_dev_*`` file, in file order (``TOTAL_ERR_*`` included).

    Names may contain spaces (``Receiver Error 2`` is ``{"Receiver Error": 2}``). Raises ``ValueError`` naming
    the first line that is not a name followed by a count, and for a file over the bounds (``MAX_AER_COUNTERS``
    lines, ``MAX_AER_NAME`` characters of printable name, a 64-bit count).
    """
    counters: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _, count = line.rpartition(" ")
        name = name.rstrip()
        if not name or not (count.isascii() and count.isdigit()):
            raise ValueError(f"expected '<name> <count>', got {line[:60]!r}")
        if len(name) > MAX_AER_NAME or not name.isprintable() or len(count) > 20 or int(count) > MAX_COUNT:
            raise ValueError(
                f"expected a name of at most {MAX_AER_NAME} printable characters and a 64-bit count, got {line[:60]!r}"
            )
        if name not in counters and len(counters) >= MAX_AER_COUNTERS:
            raise ValueError(f"more than {MAX_AER_COUNTERS} counters; not an AER statistics file")
        counters[name] = int(count)
    return counters


def aer_types(counters: dict[str, int]) -> dict[str, int]:
    """The error types of parsed AER counters that are above zero, by the kernel's name (``TOTAL_ERR_*`` left
    out): ``{"BadTLP": 2, "Timeout": 4}``."""
    return {name: n for name, n in counters.items() if n > 0 and not name.startswith(TOTAL_PREFIX)}


# Error types raised by the link itself (physical and data link layers), in the kernel's current and 4.19 names:
# the wire between the two ends corrupts or drops what crosses it, and the link retries (correctable) or gives up
# (DLP, SDES: uncorrectable). Any other type is a transaction one end sent or failed to answer (CmpltTO,
# UnsupReq, CmpltAbrt, MalfTLP, ...): the device, its firmware or its driver. docs/hardware.md has the table.
LINK_TYPES = frozenset(
    {
        *("RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout", "DLP", "SDES"),
        *("Receiver Error", "Bad TLP", "Bad DLLP", "RELAY_NUM Rollover", "Replay Timer Timeout"),
        *("Data Link Protocol", "Surprise Down Error"),
    }
)


def by_count(types: dict[str, int]) -> str:
    """``BadTLP 41, Timeout 26``: the types, most first."""
    return ", ".join(f"{name} {n}" for name, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))


def aer_problems(bdf: str, pci_id: str, counters: dict[str, dict[str, int]]) -> list[str]:
    """What the per-type AER counts of one device say, for ``picluster-agent check``: link errors (the cable, the
    adapter, a Gen 3 setting) apart from errors of the device (the drive, its firmware)."""
    out = []
    for severity, counts in counters.items():
        types = aer_types(counts)
        link = {n: c for n, c in types.items() if n in LINK_TYPES}
        device = {n: c for n, c in types.items() if n not in LINK_TYPES}
        if link:
            out.append(
                f"pcie: {bdf} ({pci_id}) {severity} link errors since boot: {by_count(link)}; if they keep rising, "
                "the link is flaky: reseat or replace the cable or adapter, or drop dtparam=pciex1_gen=3"
            )
        if device:
            out.append(
                f"pcie: {bdf} ({pci_id}) {severity} device errors since boot: {by_count(device)}; the device (or "
                "the one behind this port) failed transactions: check the drive's health and firmware (nvme "
                "smart-log), then reseat or replace it"
            )
    return out


def type_increase(now: dict[str, int], before: dict[str, int] | None) -> dict[str, int]:
    """Per-type growth between two parsed readings of one AER file, only the types that grew; none on first
    sight. A count that went down was reset (device reset, driver reloaded), so all of it is new."""
    if before is None:
        return {}
    grown = {}
    for name, count in aer_types(now).items():
        prev = before.get(name, 0)
        if count != prev:
            grown[name] = count - prev if count > prev else count
    return grown


def aer_total(counters: dict[str, int]) -> int:
    """The ``TOTAL_ERR_*`` line of parsed AER counters, or the sum of the named counters when it is missing."""
    for name in reversed(counters):  # the kernel writes it last
        if name.startswith(TOTAL_PREFIX):
            return counters[name]
    return sum(counters.values())


@dataclass(frozen=True)
class PcieLink:
    """The trained link and what it could be. Speeds are None when the kernel says ``Unknown`` (link down)."""

    speed_gts: float | None
    max_speed_gts: float | None
    width: int
    max_width: int

    @property
    def degraded(self) -> bool:
        """The link trained slower or narrower than both ends allow (or is down): a warning, not a fault."""
        if self.max_speed_gts is not None and (self.speed_gts is None or self.speed_gts < self.max_speed_gts):
            return True
        return self.width < self.max_width

    def __str__(self) -> str:
        def fmt(gts: float | None, width: int) -> str:
            return f"{'unknown' if gts is None else f'{gts:g}'} GT/s x{width}"

        return f"{fmt(self.speed_gts, self.width)} (max {fmt(self.max_speed_gts, self.max_width)})"


@dataclass(frozen=True)
class AerCounts:
    """One number per AER severity; None where the device has no such file (or it could not be read)."""

    correctable: int | None = None
    nonfatal: int | None = None
    fatal: int | None = None

    def get(self, severity: str) -> int | None:
        return getattr(self, severity)  # type: ignore[no-any-return]

    @property
    def rising(self) -> tuple[str, ...]:
        """The severities above zero (used on an increase: the ones that grew)."""
        return tuple(s for s in SEVERITIES if (self.get(s) or 0) > 0)


@dataclass(frozen=True)
class PcieSample:
    """One PCI device at one tick."""

    bdf: str  # 0001:01:00.0
    pci_id: str  # vendor:device, e.g. 14e4:2712
    link: PcieLink | None  # None for devices without a PCIe capability (or unreadable this tick)
    aer: AerCounts  # totals of the device's own AER counters
    counters: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)  # severity -> name -> count
    increase: AerCounts = AerCounts()  # aer growth since the previous reading (0 on the first)
    # severity -> type -> growth since the previous reading, only the types that grew
    types_increase: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)
    rootport: AerCounts | None = None  # aer_rootport_total_err_* (root ports only): errors from below
    rootport_increase: AerCounts | None = None

    @property
    def rising(self) -> tuple[str, ...]:
        """Severities whose counters grew since the previous reading, on the device or (root port) below it."""
        below = self.rootport_increase.rising if self.rootport_increase else ()
        return tuple(s for s in SEVERITIES if s in self.increase.rising or s in below)


@dataclass(frozen=True)
class PcieReading:
    """Every PCI device at one tick, the events since the last reading, and one error line per failed read."""

    t: float
    devices: tuple[PcieSample, ...] = ()
    events: tuple[HwEvent, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def rising(self) -> tuple[str, ...]:
        """AER severities that grew on any device since the previous reading, e.g. ``("correctable",)``."""
        return tuple(s for s in SEVERITIES if any(s in d.rising for d in self.devices))

    @property
    def degraded(self) -> tuple[str, ...]:
        """BDFs of devices whose link trained below its maximum."""
        return tuple(d.bdf for d in self.devices if d.link is not None and d.link.degraded)


class _Device:
    """The monitor's state for one device: which files it has (found once), its link's maximum, the last counts."""

    def __init__(self, path: Path) -> None:
        self.bdf = path.name
        self.path = path
        # Plain strings of the resolved directory: a tick opens these paths and nothing else, and resolving the
        # bus link once saves the kernel walking it for every file, every tick (opens are most of a tick's cost).
        real = os.path.realpath(path)
        files = {name: f"{real}/{name}" for name in os.listdir(real)} if os.path.isdir(real) else {}
        self.pci_id = ":".join(_hex_id(files.get(f, f"{path}/{f}")) for f in ("vendor", "device"))
        self.link_files = tuple(files[f] for f in LINK_FILES) if all(f in files for f in LINK_FILES) else ()
        self.aer_files = {s: files[f] for s, f in DEVICE_AER_FILES.items() if f in files}
        self.rootport_files = {s: files[f] for s, f in ROOTPORT_AER_FILES.items() if f in files}
        self.max_link: tuple[float | None, int] | None = None  # the link capability, read once
        self.aer_text: dict[str, tuple[str, dict[str, int]]] = {}  # severity -> (file text, parsed) last time
        self.prev: dict[str, int] = {}
        self.prev_counters: dict[str, dict[str, int]] = {}  # severity -> the last parsed file
        self.prev_rootport: dict[str, int] = {}

    def parse_aer(self, severity: str) -> Callable[[str], dict[str, int]]:
        """``parse_aer_counters`` that skips the parse when the file says what it said last time (it nearly always
        does: parsing is most of a tick's cost, comparing ~400 bytes is nothing)."""

        def parse(text: str) -> dict[str, int]:
            last = self.aer_text.get(severity)
            if last is None or last[0] != text:
                last = self.aer_text[severity] = (text, parse_aer_counters(text))
            return dict(last[1])

        return parse


def _hex_id(path: str) -> str:
    try:
        return read_text_file(path).removeprefix("0x")
    except HardwareError:
        return "????"


def _read(path: str) -> str:
    """One sysfs file. os.open/os.read cost a third of open() in Python, and a tick reads a score of these files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 65536)  # a sysfs attribute is at most one page
        finally:
            os.close(fd)
    except OSError as e:
        raise HardwareError(f"{path}: {e.strerror or e}") from e
    return data.decode("utf-8", "replace")


def _increase(now: dict[str, int], prev: dict[str, int]) -> AerCounts:
    """Growth per severity; a counter that went down was reset (device reset, driver reloaded), so all of it is new."""
    grown = {}
    for severity, count in now.items():
        before = prev.get(severity, count)  # first sight: no growth
        grown[severity] = count - before if count >= before else count
    return AerCounts(**grown)


class PcieMonitor:
    """Link state and AER counters of every PCI device under ``root``, with their growth between readings.

    Call ``read(now)`` from one thread at the cadence the policy needs; call ``rescan()`` after a hot-plug.
    """

    def __init__(self, root: SysfsRoot) -> None:
        self.root = root
        self._devices: dict[str, _Device] = {}
        self._events: list[HwEvent] = []
        for path in self._scan():
            self._devices[path.name] = _Device(path)

    @property
    def bdfs(self) -> tuple[str, ...]:
        """The devices being watched."""
        return tuple(self._devices)

    def _scan(self) -> list[Path]:
        return [p for p in self.root.glob(f"{PCI_DEVICES_DIR}/*") if _BDF.fullmatch(p.name)]

    def rescan(self) -> None:
        """Look for devices that appeared since; each is a ``pcie.found`` event in the next reading."""
        for path in self._scan():
            if path.name not in self._devices:
                device = self._devices[path.name] = _Device(path)
                self._events.append(HwEvent("pcie.found", device.bdf, f"PCI device {device.pci_id} appeared"))

    def read(self, now: float) -> PcieReading:
        """One sample per device; never raises. A device whose directory vanished is a ``pcie.lost`` event."""
        events, errors = self._events, []
        self._events = []
        samples = []
        for device in list(self._devices.values()):
            before = len(errors)
            sample = self._read_device(device, errors)
            if len(errors) > before and not device.path.exists():
                del errors[before:]  # not an error: it was removed
                del self._devices[device.bdf]
                events.append(HwEvent("pcie.lost", device.bdf, f"PCI device {device.pci_id} is gone"))
                log.warning("hw pcie lost device=%s id=%s", device.bdf, device.pci_id)
                continue
            samples.append(sample)
        return PcieReading(t=now, devices=tuple(samples), events=tuple(events), errors=tuple(errors))

    def _read_device(self, device: _Device, errors: list[str]) -> PcieSample:
        link = self._read_link(device, errors) if device.link_files else None
        counters: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for severity, path in device.aer_files.items():
            parsed = _attempt(device, path, device.parse_aer(severity), errors)
            if parsed is not None:
                counters[severity] = parsed
                totals[severity] = aer_total(parsed)
        rootport: dict[str, int] = {}
        for severity, path in device.rootport_files.items():
            count = _attempt(device, path, _parse_count, errors)
            if count is not None:
                rootport[severity] = count
        increase = _increase(totals, device.prev)
        device.prev = {**device.prev, **totals}
        grown = {s: g for s, c in counters.items() if (g := type_increase(c, device.prev_counters.get(s)))}
        device.prev_counters.update(counters)
        rootport_increase = None
        if device.rootport_files:
            rootport_increase = _increase(rootport, device.prev_rootport)
            device.prev_rootport = {**device.prev_rootport, **rootport}
        return PcieSample(
            bdf=device.bdf,
            pci_id=device.pci_id,
            link=link,
            aer=AerCounts(**totals),
            counters=counters,
            increase=increase,
            types_increase=grown,
            rootport=AerCounts(**rootport) if device.rootport_files else None,
            rootport_increase=rootport_increase,
        )

    def _read_link(self, device: _Device, errors: list[str]) -> PcieLink | None:
        before = len(errors)
        speed_file, max_speed_file, width_file, max_width_file = device.link_files
        if device.max_link is None:  # the link capability cannot change: read it until it reads once
            max_speed = _attempt(device, max_speed_file, parse_link_speed, errors)
            max_width = _attempt(device, max_width_file, parse_link_width, errors)
            if len(errors) == before and max_width is not None:
                device.max_link = (max_speed, max_width)
        speed = _attempt(device, speed_file, parse_link_speed, errors)
        width = _attempt(device, width_file, parse_link_width, errors)
        if len(errors) > before or width is None or device.max_link is None:
            return None  # half a link is no answer: the error lines say which file failed
        return PcieLink(speed, device.max_link[0], width, device.max_link[1])


def _parse_count(text: str) -> int:
    stripped = text.strip()
    if not _COUNT.fullmatch(stripped):
        raise ValueError(f"expected a count, got {text[:40]!r}")
    return int(stripped)


def _attempt(device: _Device, path: str, parse: Callable[[str], T], errors: list[str]) -> T | None:
    """``parse(contents of path)``, or None with ``"pcie: <bdf>: <path>: <why>"`` in ``errors``."""
    try:
        return parse(_read(path))
    except HardwareError as e:  # its message already names the path
        errors.append(f"pcie: {device.bdf}: {e}")
    except ValueError as e:
        errors.append(f"pcie: {device.bdf}: {path}: {e}")
    return None
