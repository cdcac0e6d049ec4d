"""NVMe drive health without smartctl: the SMART / Health log page by ioctl, the temperature from hwmon.

``NvmeHealth`` finds every controller under ``sys/class/nvme`` once, at construction (``rescan()`` looks again
after a hot-plug). Each ``read(now)`` gives one ``NvmeSample`` per drive: the SMART page (LID 0x02) is fetched at
most every ``interval_s`` (default 60 s) with one Get Log Page admin command on ``/dev/nvmeN``, and between those
reads the temperature comes from the drive's ``nvme`` hwmon device (``temp1_input``), which costs one file read.

Reading the SMART page needs CAP_SYS_ADMIN (the kernel refuses admin pass-through otherwise). Without it the
agent logs one warning, names the fix in that tick's errors, and carries on with the hwmon temperature alone.
A drive that disappears (its sysfs directory gone, or ENODEV/ENXIO from the ioctl) is an ``nvme.lost`` event,
not an error every tick; when it comes back that is an ``nvme.found`` event naming the model and serial, so a
swapped drive is visible as such.

The page layout follows ``struct nvme_smart_log`` (include/linux/nvme.h); see ``parse_smart_log``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nodeagent.errors import HardwareError
from nodeagent.hw.events import HwEvent
from nodeagent.hw.root import SysfsRoot, read_int_file, read_text_file

log = logging.getLogger(__name__)

NVME_CLASS_DIR = "sys/class/nvme"
SMART_LOG_SIZE = 512
NVME_IOCTL_ADMIN_CMD = 0xC0484E41  # _IOWR('N', 0x41, struct nvme_passthru_cmd): 72 bytes, read and written back
NVME_ADMIN_GET_LOG_PAGE = 0x02
NVME_NSID_ALL = 0xFFFFFFFF  # the controller-wide SMART log, not one namespace's
SMART_LOG_LID = 0x02
# cdw10: log page id in bits 7:0, NUMDL (number of dwords - 1) in bits 31:16 -> 0x007F0002 for 512 bytes.
SMART_LOG_CDW10 = SMART_LOG_LID | ((SMART_LOG_SIZE // 4 - 1) << 16)
KELVIN_OFFSET = 273.15  # the kernel's kelvin_to_millicelsius(), so SMART and hwmon temperatures agree

# struct nvme_passthru_cmd (include/uapi/linux/nvme_ioctl.h), native byte order as the kernel reads it:
# opcode flags rsvd1 nsid cdw2 cdw3 metadata addr metadata_len data_len cdw10..cdw15 timeout_ms result
PASSTHRU_CMD = struct.Struct("=BBHIIIQQII6III")

# critical_warning bits. Bit 5 is named by NVMe 1.4 and later; unnamed bits show as bitN.
CRITICAL_WARNING_BITS: dict[int, str] = {
    0: "spare_below_threshold",
    1: "temperature",
    2: "reliability_degraded",
    3: "read_only",
    4: "volatile_backup_failed",
    5: "persistent_memory_read_only",
}
BYTES_PER_DATA_UNIT = 512_000  # a data unit is 1000 blocks of 512 bytes

# The 16-byte little-endian counters: field name and offset in the page.
_U128_FIELDS: tuple[tuple[str, int], ...] = (
    ("data_units_read", 32),
    ("data_units_written", 48),
    ("host_read_commands", 64),
    ("host_write_commands", 80),
    ("controller_busy_min", 96),
    ("power_cycles", 112),
    ("power_on_hours", 128),
    ("unsafe_shutdowns", 144),
    ("media_errors", 160),
    ("error_log_entries", 176),
)
_HEAD = struct.Struct("<BHBBBB")  # offset 0: critical_warning, temperature (K), spare, threshold, used, endurance
_TAIL = struct.Struct("<II8H4I")  # offset 192: warning/critical temp time, sensors 1-8 (K), thermal management
_CONTROLLER = re.compile(r"nvme[0-9]+")  # not nvme-fabrics or nvme-subsystem
_GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO})


class NvmeGone(HardwareError):
    """The controller went away (surprise removal, or the driver gave up on it)."""


class SmartUnavailable(HardwareError):
    """The SMART log cannot be read on this machine at all (no permission, no device node, not an NVMe device)."""


def decode_critical_warning(bits: int) -> tuple[str, ...]:
    """Names of the set critical_warning bits, lowest first; an unnamed bit shows as ``bit<N>``."""
    return tuple(CRITICAL_WARNING_BITS.get(bit, f"bit{bit}") for bit in range(8) if bits >> bit & 1)


def _kelvin_to_c(kelvin: int) -> float | None:
    return round(kelvin - KELVIN_OFFSET, 2) if kelvin else None  # 0 K means "not reported"


@dataclass(frozen=True)
class SmartLog:
    """The SMART / Health Information log page of one controller, decoded. Counters are lifetime totals."""

    critical_warning: int  # raw bits; see critical_warning_names
    composite_temp_c: float | None  # None when the drive reports 0 K
    available_spare_pct: int
    available_spare_threshold_pct: int
    percentage_used_pct: int  # the vendor's endurance estimate; may exceed 100
    endurance_critical_warning: int  # endurance group summary (NVMe 1.4+; 0 on older drives)
    data_units_read: int  # units of 512,000 bytes; see data_read_bytes
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_min: int
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int  # media and data integrity errors
    error_log_entries: int
    warning_temp_time_min: int  # time spent above the warning composite temperature threshold
    critical_temp_time_min: int
    temp_sensors_c: tuple[tuple[int, float], ...]  # (sensor number 1-8, °C) for the sensors the drive implements
    thermal_t1_transitions: int  # times the drive entered light thermal throttling (HCTM T1)
    thermal_t2_transitions: int  # ... heavy thermal throttling (T2)
    thermal_t1_time_s: int
    thermal_t2_time_s: int

    @property
    def critical_warning_names(self) -> tuple[str, ...]:
        """The set critical_warning bits by name, e.g. ``("spare_below_threshold", "temperature")``."""
        return decode_critical_warning(self.critical_warning)

    @property
    def data_read_bytes(self) -> int:
        return self.data_units_read * BYTES_PER_DATA_UNIT

    @property
    def data_written_bytes(self) -> int:
        return self.data_units_written * BYTES_PER_DATA_UNIT


def parse_smart_log(page: bytes | bytearray | memoryview) -> SmartLog:
    """Decode a 512-byte SMART / Health log page. Raises ``ValueError`` for any other length.

    Any 512 bytes decode: the page has no checksum or magic, so a garbage page gives garbage values, not an error.
    """
    if not isinstance(page, bytes | bytearray | memoryview):
        raise ValueError(f"SMART log page: expected {SMART_LOG_SIZE} bytes, got {type(page).__name__}")
    page = bytes(page)
    if len(page) != SMART_LOG_SIZE:
        raise ValueError(f"SMART log page: expected {SMART_LOG_SIZE} bytes, got {len(page)}")
    crit, temp_k, spare, spare_threshold, used, endurance = _HEAD.unpack_from(page, 0)
    warn_min, crit_min, *rest = _TAIL.unpack_from(page, 192)
    sensors_k, thermal = rest[:8], rest[8:]
    counters = {name: int.from_bytes(page[off : off + 16], "little") for name, off in _U128_FIELDS}
    return SmartLog(
        critical_warning=crit,
        composite_temp_c=_kelvin_to_c(temp_k),
        available_spare_pct=spare,
        available_spare_threshold_pct=spare_threshold,
        percentage_used_pct=used,
        endurance_critical_warning=endurance,
        **counters,
        warning_temp_time_min=warn_min,
        critical_temp_time_min=crit_min,
        temp_sensors_c=tuple((i + 1, round(k - KELVIN_OFFSET, 2)) for i, k in enumerate(sensors_k) if k),
        thermal_t1_transitions=thermal[0],
        thermal_t2_transitions=thermal[1],
        thermal_t1_time_s=thermal[2],
        thermal_t2_time_s=thermal[3],
    )


def build_get_log_page_cmd(buf_addr: int) -> bytes:
    """The 72-byte ``struct nvme_passthru_cmd`` asking for the SMART log into the 512 bytes at ``buf_addr``."""
    cdw10_15 = (SMART_LOG_CDW10, 0, 0, 0, 0, 0)
    return PASSTHRU_CMD.pack(
        NVME_ADMIN_GET_LOG_PAGE, 0, 0, NVME_NSID_ALL, 0, 0, 0, buf_addr, 0, SMART_LOG_SIZE, *cdw10_15, 0, 0
    )


def read_smart_log(dev_path: str) -> bytes:
    """The raw SMART page of the controller character device ``dev_path`` (``/dev/nvme0``), by ioctl.

    Raises ``SmartUnavailable`` when this process cannot read it at all (no CAP_SYS_ADMIN, no such device node,
    not an NVMe controller), ``NvmeGone`` when the controller has gone away, ``HardwareError`` otherwise (the
    drive answered with an NVMe error status). Every message names the device.
    """
    if os.path.isfile(dev_path):  # a recorded tree: its dev/nvmeN is a regular file holding a captured page
        return _read_recorded_page(dev_path)
    buf = ctypes.create_string_buffer(SMART_LOG_SIZE)
    cmd = bytearray(build_get_log_page_cmd(ctypes.addressof(buf)))
    try:
        fd = os.open(dev_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _smart_error(dev_path, "open", e) from e
    try:
        status = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd, True)
    except OSError as e:
        raise _smart_error(dev_path, "Get Log Page ioctl", e) from e
    finally:
        os.close(fd)
    if status != 0:  # a positive return is the NVMe completion status: the drive refused the command
        raise HardwareError(f"{dev_path}: Get Log Page (SMART) failed with NVMe status 0x{status:x}")
    return buf.raw


def _read_recorded_page(path: str) -> bytes:
    """A SMART page saved to a file (``nvme smart-log -b`` or this module's own capture) replays a drive."""
    try:
        with open(path, "rb") as fh:
            page = fh.read(SMART_LOG_SIZE + 1)
    except OSError as e:
        raise _smart_error(path, "read", e) from e
    if len(page) != SMART_LOG_SIZE:
        raise HardwareError(f"{path}: a recorded SMART page must be {SMART_LOG_SIZE} bytes, got {len(page)}")
    return page


def _smart_error(dev_path: str, what: str, e: OSError) -> HardwareError:
    cause = e.strerror or str(e)
    if e.errno in (errno.EACCES, errno.EPERM):
        return SmartUnavailable(
            f"{dev_path}: {what}: {cause} — the SMART log needs CAP_SYS_ADMIN: run picluster-agent as root or "
            "give it AmbientCapabilities=CAP_SYS_ADMIN (the hwmon temperature works without)"
        )
    if e.errno in _GONE_ERRNOS:
        return NvmeGone(f"{dev_path}: {what}: {cause}")
    if e.errno == errno.ENOENT:
        return SmartUnavailable(f"{dev_path}: {cause} — no device node (is /dev mounted, or dev_dir set right?)")
    if e.errno == errno.ENOTTY:
        return SmartUnavailable(f"{dev_path}: not an NVMe controller ({what}: {cause}); use /dev/nvmeN")
    return HardwareError(f"{dev_path}: {what}: {cause}")


@dataclass(frozen=True)
class NvmeDrive:
    """What a controller is, read from sysfs when it is found (again after it comes back)."""

    name: str  # nvme0
    model: str
    serial: str
    firmware_rev: str
    sysfs_path: str  # the class directory under the root
    dev_path: str  # the character device the SMART log is read from
    temp_path: str | None  # the nvme hwmon temp1_input, or None when the kernel has no NVMe hwmon

    def __str__(self) -> str:
        return f"{self.name} ({self.model or 'unknown model'}, {self.serial or 'no serial'})"


@dataclass(frozen=True)
class NvmeSample:
    """One drive at one tick. ``temp_c`` is the composite temperature: from the SMART page when one was read
    this tick or when there is no hwmon device, else from hwmon. ``smart`` is the latest page, read at ``smart_t``.
    A drive that is gone has ``present`` False and nothing else."""

    name: str
    present: bool = True
    temp_c: float | None = None
    temp_source: str = ""  # "smart", "hwmon" or ""
    smart: SmartLog | None = None
    smart_t: float | None = None


@dataclass(frozen=True)
class NvmeReading:
    """Every drive at one tick, the events since the last reading, and one error line per failed read."""

    t: float
    drives: tuple[NvmeSample, ...] = ()
    events: tuple[HwEvent, ...] = ()
    errors: tuple[str, ...] = ()


def find_nvme_hwmon(class_path: Path) -> Path | None:
    """The ``nvme`` hwmon directory of one controller: in the class device (current kernels) or, on older ones,
    in its PCI device. Found by its ``name`` file, never by number."""
    for hwmon in sorted(class_path.glob("hwmon*")) + sorted(class_path.glob("device/hwmon/hwmon*")):
        try:
            if read_text_file(hwmon / "name") == "nvme":
                return hwmon
        except HardwareError:
            continue
    return None


def describe_controller(class_path: Path, dev_dir: str) -> NvmeDrive:
    """Read a controller's identity from sysfs (``model``, ``serial``, ``firmware_rev``; ``""`` when unreadable)."""

    def attr(name: str) -> str:
        try:
            return read_text_file(class_path / name)
        except HardwareError:
            return ""

    hwmon = find_nvme_hwmon(class_path)
    return NvmeDrive(
        name=class_path.name,
        model=attr("model"),
        serial=attr("serial"),
        firmware_rev=attr("firmware_rev"),
        sysfs_path=str(class_path),
        dev_path=os.path.join(dev_dir, class_path.name),
        temp_path=str(hwmon / "temp1_input") if hwmon else None,
    )


class _Drive:
    """The reader's state for one controller."""

    def __init__(self, info: NvmeDrive) -> None:
        self.info = info
        self.present = True
        self.smart: SmartLog | None = None
        self.smart_t: float | None = None
        self.last_try: float | None = None  # when the SMART page was last asked for, successful or not
        self.smart_off = ""  # why the SMART page is not read on this drive; "" while it is

    def smart_due(self, now: float, interval_s: float) -> bool:
        if self.smart_off:
            return False
        # A clock stepped back counts as due, so a bad clock cannot stop the reads.
        return self.last_try is None or now - self.last_try >= interval_s or now < self.last_try


class NvmeHealth:
    """SMART health and temperature of every NVMe drive under ``root``.

    ``dev_dir`` is where the controllers' device nodes are (``/dev``; it is not under ``root`` because a recorded
    tree has no device nodes). ``reader`` fetches one raw page; tests pass recorded pages through it.
    Call ``read(now)`` once per tick from one thread; call ``rescan()`` after a hot-plug to find new controllers.
    """

    def __init__(
        self,
        root: SysfsRoot,
        *,
        dev_dir: str = "/dev",
        interval_s: float = 60.0,
        reader: Callable[[str], bytes] = read_smart_log,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a number above 0, got {interval_s!r}")
        self.root = root
        self.dev_dir = dev_dir
        self.interval_s = interval_s
        self._reader = reader
        self._drives: dict[str, _Drive] = {}
        self._events: list[HwEvent] = []
        for class_path in self._controllers():
            self._drives[class_path.name] = _Drive(describe_controller(class_path, dev_dir))

    @property
    def drives(self) -> tuple[NvmeDrive, ...]:
        """Every controller known, present or not, in name order (for the node's facts)."""
        return tuple(d.info for d in self._drives.values())

    def _controllers(self) -> list[Path]:
        found = [p for p in self.root.glob(f"{NVME_CLASS_DIR}/nvme*") if _CONTROLLER.fullmatch(p.name)]
        return sorted(found, key=lambda p: int(p.name[4:]))

    def rescan(self) -> None:
        """Look for controllers that appeared since; each new one is an ``nvme.found`` event in the next reading."""
        for class_path in self._controllers():
            if class_path.name not in self._drives:
                drive = _Drive(describe_controller(class_path, self.dev_dir))
                self._drives[class_path.name] = drive
                self._events.append(HwEvent("nvme.found", drive.info.name, f"{drive.info} appeared"))

    def read(self, now: float) -> NvmeReading:
        """One sample per drive; never raises (failures are in ``errors``, drives coming and going in ``events``)."""
        events, errors = self._events, []
        self._events = []
        samples = []
        for drive in self._drives.values():
            if drive.present:
                samples.append(self._read_present(drive, now, events, errors))
            else:
                samples.append(self._read_returning(drive, now, events, errors))
        return NvmeReading(t=now, drives=tuple(samples), events=tuple(events), errors=tuple(errors))

    def _read_present(self, drive: _Drive, now: float, events: list[HwEvent], errors: list[str]) -> NvmeSample:
        name = drive.info.name
        fresh = False
        if drive.smart_due(now, self.interval_s):
            drive.last_try = now
            try:
                drive.smart = parse_smart_log(self._reader(drive.info.dev_path))
            except SmartUnavailable as e:
                drive.smart_off = str(e)
                log.warning("hw nvme smart unavailable device=%s error=%r", name, str(e))
                errors.append(f"nvme: {name}: {e}")
            except OSError as e:
                if isinstance(e, NvmeGone) or e.errno in _GONE_ERRNOS:
                    return self._lose(drive, str(e), events)
                errors.append(f"nvme: {name}: {e}")
            except Exception as e:  # a garbage page or a reader bug must not stop the other drives
                errors.append(f"nvme: {name}: {drive.info.dev_path}: {type(e).__name__}: {e}")
            else:
                drive.smart_t = now
                fresh = True
        smart_temp = drive.smart.composite_temp_c if drive.smart else None
        if fresh or drive.info.temp_path is None:
            if not fresh and not os.path.isdir(drive.info.sysfs_path):
                return self._lose(drive, f"{drive.info.sysfs_path} is gone", events)
            source = "smart" if smart_temp is not None else ""
            return NvmeSample(name, True, smart_temp, source, drive.smart, drive.smart_t)
        try:
            temp_c = read_int_file(drive.info.temp_path) / 1000.0
        except HardwareError as e:
            if not os.path.isdir(drive.info.sysfs_path):
                return self._lose(drive, f"{drive.info.sysfs_path} is gone", events)
            errors.append(f"nvme: {name}: {e}")
            return NvmeSample(name, True, None, "", drive.smart, drive.smart_t)
        return NvmeSample(name, True, temp_c, "hwmon", drive.smart, drive.smart_t)

    def _lose(self, drive: _Drive, cause: str, events: list[HwEvent]) -> NvmeSample:
        drive.present = False
        drive.smart = drive.smart_t = None
        event = HwEvent("nvme.lost", drive.info.name, f"{drive.info} is gone: {cause}")
        log.warning("hw nvme lost device=%s detail=%r", drive.info.name, event.message)
        events.append(event)
        return NvmeSample(drive.info.name, present=False)

    def _read_returning(self, drive: _Drive, now: float, events: list[HwEvent], errors: list[str]) -> NvmeSample:
        """A lost drive is back once its sysfs directory exists and its temperature reads (a stat per tick until)."""
        class_path = Path(drive.info.sysfs_path)
        if not class_path.is_dir():
            return NvmeSample(drive.info.name, present=False)
        info = describe_controller(class_path, self.dev_dir)
        if info.temp_path is not None:
            try:
                read_int_file(info.temp_path)
            except HardwareError:
                return NvmeSample(drive.info.name, present=False)
        # Start afresh: it may be another drive in the same slot, so its SMART page is read at once.
        drive = self._drives[info.name] = _Drive(info)
        event = HwEvent("nvme.found", info.name, f"{info} is back (firmware {info.firmware_rev or 'unknown'})")
        log.info("hw nvme found device=%s detail=%r", info.name, event.message)
        events.append(event)
        return self._read_present(drive, now, events, errors)
