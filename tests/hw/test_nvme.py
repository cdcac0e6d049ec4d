"""NVMe health: the SMART page parser, the ioctl command it sends, and NvmeHealth on the recorded trees."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import HardwareError
from nodeagent.hw.events import HwEvent
from nodeagent.hw.nvme import (
    NVME_IOCTL_ADMIN_CMD,
    NvmeGone,
    NvmeHealth,
    SmartLog,
    SmartUnavailable,
    _smart_error,
    build_get_log_page_cmd,
    decode_critical_warning,
    parse_smart_log,
    read_smart_log,
)
from nodeagent.hw.root import SysfsRoot
from tests.data.nvme.make_pages import LAYOUT, PAGES, pack_smart_page
from tests.hw.trees import DATA

PAGES_DIR = Path(__file__).resolve().parent.parent / "data" / "nvme"
CM5 = "cm5-nanocluster"
PI5 = "pi5-hwmon-only"
NVME0 = "sys/devices/platform/axi/1000110000.pcie/pci0001:00/0001:00:00.0/0001:01:00.0/nvme/nvme0"
TreeCopy = Callable[[str], Path]


def page(name: str) -> bytes:
    return (PAGES_DIR / name).read_bytes()


# --- the parser on the recorded pages -------------------------------------------------------------------------------


def test_recorded_pages_are_what_make_pages_writes() -> None:
    for name, fields in PAGES.items():
        assert page(name) == pack_smart_page(**fields), f"{name}: run tests/data/nvme/make_pages.py"


def test_healthy_page() -> None:
    log = parse_smart_log(page("healthy.bin"))
    assert log.critical_warning == 0 and log.critical_warning_names == ()
    assert log.composite_temp_c == pytest.approx(41.85)
    assert (log.available_spare_pct, log.available_spare_threshold_pct, log.percentage_used_pct) == (100, 10, 3)
    assert log.data_units_read == 12_345_678
    assert log.data_read_bytes == 12_345_678 * 512_000
    assert log.data_written_bytes == 9_876_543 * 512_000
    assert (log.host_read_commands, log.host_write_commands) == (234_567_890, 345_678_901)
    assert (log.controller_busy_min, log.power_cycles, log.power_on_hours) == (1_234, 187, 2_961)
    assert (log.unsafe_shutdowns, log.media_errors, log.error_log_entries) == (23, 0, 0)
    assert log.temp_sensors_c == ((1, pytest.approx(41.85)), (2, pytest.approx(47.85)))


def test_warning_page() -> None:
    log = parse_smart_log(page("warning-spare-temp.bin"))
    assert log.critical_warning == 0x03
    assert log.critical_warning_names == ("spare_below_threshold", "temperature")
    assert log.composite_temp_c == pytest.approx(84.85)
    assert log.available_spare_pct < log.available_spare_threshold_pct
    assert (log.media_errors, log.error_log_entries) == (17, 212)
    assert (log.warning_temp_time_min, log.critical_temp_time_min) == (93, 4)
    assert log.temp_sensors_c == ((1, pytest.approx(86.85)),)
    assert (log.thermal_t1_transitions, log.thermal_t2_transitions) == (1_503, 41)
    assert (log.thermal_t1_time_s, log.thermal_t2_time_s) == (8_123, 311)


def test_counters_over_2e64() -> None:
    log = parse_smart_log(page("counters-over-2e64.bin"))
    assert log.data_units_read == 2**64 + 7
    assert log.data_units_written == 2**65 + 3
    assert log.data_written_bytes == (2**65 + 3) * 512_000
    assert log.host_read_commands == 2**100 + 1
    assert log.host_write_commands == 2**128 - 1
    assert log.power_on_hours == 2**64
    assert log.percentage_used_pct == 255  # the vendor's estimate may exceed 100
    assert log.endurance_critical_warning == 1
    assert log.critical_warning_names == ("reliability_degraded", "persistent_memory_read_only", "bit6")
    assert log.temp_sensors_c == ()


@pytest.mark.parametrize(
    ("offset", "raw", "field", "value"),
    [
        (0x00, b"\x10", "critical_warning", 0x10),
        (0x01, (343).to_bytes(2, "little"), "composite_temp_c", 69.85),
        (0x03, b"\x07", "available_spare_pct", 7),
        (0x05, b"\x96", "percentage_used_pct", 150),
        (0x2F, b"\x01", "data_units_read", 1 << 120),  # the last byte of a 128-bit counter
        (0x30, b"\x01", "data_units_written", 1),
        (0x70, b"\x02", "power_cycles", 2),
        (0x80, b"\x00\x01", "power_on_hours", 256),
        (0x90, b"\x05", "unsafe_shutdowns", 5),
        (0xA0, b"\x09", "media_errors", 9),
        (0xB0, b"\x0b", "error_log_entries", 11),
        (0xC0, b"\x2a", "warning_temp_time_min", 42),
        (0xC4, b"\x03", "critical_temp_time_min", 3),
        (0xD6, (300).to_bytes(2, "little"), "temp_sensors_c", ((8, 26.85),)),
        (0xE4, b"\x10", "thermal_t2_time_s", 16),
    ],
)
def test_one_field_at_its_offset(offset: int, raw: bytes, field: str, value: object) -> None:
    # Written against the offset table in reference/hardware.md §3.7, not against either packer.
    buf = bytearray(512)
    buf[offset : offset + len(raw)] = raw
    log = parse_smart_log(bytes(buf))
    assert getattr(log, field) == (pytest.approx(value) if isinstance(value, float) else value)


def test_zero_kelvin_is_no_temperature() -> None:
    assert parse_smart_log(bytes(512)).composite_temp_c is None


def test_decode_critical_warning_names_every_bit() -> None:
    assert decode_critical_warning(0xFF) == (
        "spare_below_threshold",
        "temperature",
        "reliability_degraded",
        "read_only",
        "volatile_backup_failed",
        "persistent_memory_read_only",
        "bit6",
        "bit7",
    )


# --- the parser, property-based -------------------------------------------------------------------------------------

_FIELD_VALUES = st.fixed_dictionaries({name: st.integers(0, 2 ** (8 * size) - 1) for name, (_, size) in LAYOUT.items()})


@given(_FIELD_VALUES)
def test_round_trip(fields: dict[str, int]) -> None:
    log = parse_smart_log(pack_smart_page(**fields))
    assert isinstance(log, SmartLog)
    for name, value in fields.items():
        if name == "composite_temp_k":
            assert log.composite_temp_c == (pytest.approx(value - 273.15) if value else None)
        elif not name.startswith("temp_sensor"):
            assert getattr(log, name) == value, name
    sensors = [(i, fields[f"temp_sensor{i}_k"]) for i in range(1, 9) if fields[f"temp_sensor{i}_k"]]
    assert [i for i, _ in log.temp_sensors_c] == [i for i, _ in sensors]
    assert [c for _, c in log.temp_sensors_c] == pytest.approx([k - 273.15 for _, k in sensors])
    assert log.data_read_bytes == fields["data_units_read"] * 512_000
    assert len(log.critical_warning_names) == bin(fields["critical_warning"]).count("1")


@given(st.binary(min_size=512, max_size=512))
def test_any_512_bytes_decode(raw: bytes) -> None:
    log = parse_smart_log(raw)
    assert 0 <= log.critical_warning <= 255
    assert 0 <= log.data_units_written < 2**128


@given(st.binary(max_size=1100).filter(lambda b: len(b) != 512))
def test_other_lengths_are_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match=rf"SMART log page: expected 512 bytes, got {len(raw)}$"):
        parse_smart_log(raw)


def test_non_bytes_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected 512 bytes, got str"):
        parse_smart_log("x" * 512)  # type: ignore[arg-type]


# --- the ioctl ------------------------------------------------------------------------------------------------------


def test_ioctl_number_is_iowr_n_0x41_of_72_bytes() -> None:
    # _IOWR(type, nr, size) = (READ|WRITE = 3) << 30 | size << 16 | type << 8 | nr
    assert NVME_IOCTL_ADMIN_CMD == (3 << 30) | (72 << 16) | (ord("N") << 8) | 0x41 == 0xC0484E41


def test_get_log_page_command_fields() -> None:
    addr = 0x0000_7F12_3456_7890
    cmd = build_get_log_page_cmd(addr)
    assert len(cmd) == 72

    def at(offset: int, fmt: str) -> int:
        return struct.unpack_from("=" + fmt, cmd, offset)[0]

    assert at(0, "B") == 0x02  # opcode: Get Log Page
    assert at(1, "B") == 0  # flags
    assert at(2, "H") == 0  # rsvd1
    assert at(4, "I") == 0xFFFF_FFFF  # nsid: the whole controller
    assert at(8, "I") == at(12, "I") == 0  # cdw2, cdw3
    assert at(16, "Q") == 0  # metadata
    assert at(24, "Q") == addr  # addr: the 512-byte buffer
    assert at(32, "I") == 0  # metadata_len
    assert at(36, "I") == 512  # data_len
    assert at(40, "I") == 0x007F_0002  # cdw10: LID 2, NUMDL 127
    assert [at(off, "I") for off in (44, 48, 52, 56, 60)] == [0] * 5  # cdw11-15
    assert at(64, "I") == 0  # timeout_ms: the driver's default
    assert at(68, "I") == 0  # result


def test_dev_null_is_not_an_nvme_controller() -> None:
    with pytest.raises(SmartUnavailable, match=r"^/dev/null: not an NVMe controller \(Get Log Page ioctl: Inappro"):
        read_smart_log("/dev/null")


def test_a_regular_file_replays_a_recorded_page(tmp_path: Path) -> None:
    # A recorded tree cannot hold a device node; its dev/nvme0 is the captured page itself.
    page = tmp_path / "nvme0"
    page.write_bytes((PAGES_DIR / "healthy.bin").read_bytes())
    assert parse_smart_log(read_smart_log(str(page))).composite_temp_c == pytest.approx(41.85)
    page.write_bytes(b"")
    with pytest.raises(HardwareError, match=rf"^{page}: a recorded SMART page must be 512 bytes, got 0"):
        read_smart_log(str(page))


def test_a_character_device_that_is_not_nvme_is_refused() -> None:
    with pytest.raises(SmartUnavailable, match=r"^/dev/null: not an NVMe controller"):
        read_smart_log("/dev/null")


def test_missing_device_node(tmp_path: Path) -> None:
    with pytest.raises(SmartUnavailable, match=rf"^{tmp_path}/nvme0: No such file or directory — no device node"):
        read_smart_log(str(tmp_path / "nvme0"))


def _unused_char_major() -> int | None:
    """A character major number no driver has registered (opening a node with it gives ENXIO)."""
    used: set[int] = set()
    in_char = False
    for line in Path("/proc/devices").read_text().splitlines():
        if line.endswith(":"):
            in_char = line.startswith("Character")
            continue
        if in_char and line.split():
            used.add(int(line.split()[0]))
    return next((m for m in range(240, 255) if m not in used), None)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root (CAP_MKNOD)")
def test_device_node_without_a_driver_is_gone(tmp_path: Path) -> None:
    # What a controller's node does once the driver has let go of it: a real ENXIO from the kernel.
    major = _unused_char_major()
    if major is None:
        pytest.skip("no unused character major number in 240-254")
    node = tmp_path / "nvme9"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(major, 0))
    except PermissionError as e:
        pytest.skip(f"mknod refused here: {e.strerror}")
    try:
        os.close(os.open(node, os.O_RDONLY))
    except PermissionError:
        pytest.skip(f"{tmp_path} is mounted nodev")
    except OSError:
        pass  # ENXIO: what the test is about
    with pytest.raises(NvmeGone, match=rf"^{node}: open: No such device or address$"):
        read_smart_log(str(node))


@pytest.mark.parametrize(
    ("code", "kind", "message"),
    [
        (errno.EACCES, SmartUnavailable, r"/dev/nvme0: open: Permission denied — the SMART log needs CAP_SYS_ADMIN"),
        (errno.EPERM, SmartUnavailable, r"AmbientCapabilities=CAP_SYS_ADMIN"),
        (errno.ENODEV, NvmeGone, r"^/dev/nvme0: open: No such device$"),
        (errno.EIO, HardwareError, r"^/dev/nvme0: open: Input/output error$"),
    ],
)
def test_errno_to_error(code: int, kind: type[HardwareError], message: str) -> None:
    # EACCES and ENODEV cannot be provoked here as root without a drive; the mapping is what matters.
    error = _smart_error("/dev/nvme0", "open", OSError(code, os.strerror(code)))
    assert type(error) is kind
    assert isinstance(error, HardwareError)
    assert re.search(message, str(error))


@pytest.mark.skipif(not Path("/dev/nvme0").exists(), reason="no NVMe controller /dev/nvme0 on this machine")
def test_real_drive() -> None:
    try:
        log = parse_smart_log(read_smart_log("/dev/nvme0"))
    except SmartUnavailable as e:
        pytest.skip(str(e))
    assert log.composite_temp_c is not None and -40 < log.composite_temp_c < 125
    assert log.power_on_hours >= 0


# --- NvmeHealth on the recorded trees -------------------------------------------------------------------------------


class Pages:
    """Hands out recorded pages (or raises what it is told to) and counts the reads."""

    def __init__(self, *items: bytes | BaseException) -> None:
        self.items = list(items)
        self.calls: list[str] = []

    def __call__(self, dev_path: str) -> bytes:
        self.calls.append(dev_path)
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if isinstance(item, BaseException):
            raise item
        return item


def test_discovery_by_name() -> None:
    health = NvmeHealth(SysfsRoot(DATA / CM5), reader=Pages(page("healthy.bin")))
    (drive,) = health.drives
    assert (drive.name, drive.model, drive.serial, drive.firmware_rev) == (
        "nvme0",
        "Samsung SSD 980 500GB",
        "S64DNL0T901234X",
        "3B4QFXO7",
    )
    assert drive.dev_path == "/dev/nvme0"
    assert drive.temp_path == str(DATA / CM5 / "sys/class/nvme/nvme0/hwmon4/temp1_input")


def test_smart_every_interval_hwmon_between() -> None:
    pages = Pages(page("healthy.bin"))
    health = NvmeHealth(SysfsRoot(DATA / CM5), interval_s=60.0, reader=pages, dev_dir="/dev")
    first = health.read(1000.0)
    (sample,) = first.drives
    assert (sample.temp_c, sample.temp_source, sample.smart_t) == (pytest.approx(41.85), "smart", 1000.0)
    assert sample.smart is not None and sample.smart.power_on_hours == 2961
    assert first.errors == first.events == ()
    for now in (1005.0, 1030.0, 1059.9):
        (sample,) = health.read(now).drives
        assert (sample.temp_c, sample.temp_source, sample.smart_t) == (pytest.approx(41.85), "hwmon", 1000.0)
    assert pages.calls == ["/dev/nvme0"]
    health.read(1060.0)
    health.read(500.0)  # the clock stepped back: read now rather than wait for it to catch up
    assert pages.calls == ["/dev/nvme0"] * 3


def test_no_permission_warns_once_and_keeps_the_hwmon_temperature(caplog: pytest.LogCaptureFixture) -> None:
    denied = _smart_error("/dev/nvme0", "open", OSError(errno.EACCES, "Permission denied"))
    pages = Pages(denied)
    health = NvmeHealth(SysfsRoot(DATA / CM5), reader=pages)
    with caplog.at_level(logging.WARNING, logger="nodeagent.hw.nvme"):
        first = health.read(0.0)
        later = [health.read(t) for t in (60.0, 120.0, 600.0)]
    assert len(first.errors) == 1
    assert first.errors[0].startswith("nvme: nvme0: /dev/nvme0: open: Permission denied — ")
    assert first.drives[0].temp_c == pytest.approx(41.85) and first.drives[0].temp_source == "hwmon"
    assert all(r.errors == () and r.drives[0].temp_source == "hwmon" for r in later)
    assert len(pages.calls) == 1
    assert len(caplog.records) == 1


def test_transient_failure_is_an_error_line_and_retried_after_the_interval() -> None:
    pages = Pages(HardwareError("/dev/nvme0: Get Log Page (SMART) failed with NVMe status 0x4004"), page("healthy.bin"))
    health = NvmeHealth(SysfsRoot(DATA / CM5), reader=pages)
    first = health.read(0.0)
    assert first.errors == ("nvme: nvme0: /dev/nvme0: Get Log Page (SMART) failed with NVMe status 0x4004",)
    assert first.drives[0].smart is None and first.drives[0].temp_source == "hwmon"
    assert health.read(30.0).errors == ()
    assert health.read(60.0).drives[0].smart is not None


@pytest.mark.parametrize("bad", [b"\x00" * 100, RuntimeError("reader bug")])
def test_garbage_never_raises(bad: bytes | BaseException) -> None:
    reading = NvmeHealth(SysfsRoot(DATA / CM5), reader=Pages(bad)).read(0.0)
    (line,) = reading.errors
    assert line.startswith("nvme: nvme0: /dev/nvme0: ")
    assert ("expected 512 bytes, got 100" in line) or ("RuntimeError: reader bug" in line)
    assert reading.drives[0].temp_c == pytest.approx(41.85)


def test_surprise_removal_and_return(tree_copy: TreeCopy, caplog: pytest.LogCaptureFixture) -> None:
    root = tree_copy(CM5)
    pages = Pages(page("healthy.bin"))
    health = NvmeHealth(SysfsRoot(root), reader=pages)
    assert health.read(0.0).events == ()
    stash = root.parent / "stash"
    shutil.move(root / NVME0, stash)  # the kernel removes the controller's sysfs directory
    gone = health.read(5.0)
    assert gone.errors == ()
    assert gone.drives[0].present is False and gone.drives[0].temp_c is None
    (event,) = gone.events
    assert event.kind == "nvme.lost" and event.device == "nvme0"
    assert "nvme0 (Samsung SSD 980 500GB, S64DNL0T901234X) is gone" in event.message
    for now in (10.0, 15.0):  # quiet while it is away
        reading = health.read(now)
        assert (reading.events, reading.errors, reading.drives[0].present) == ((), (), False)
    # Another drive goes into the slot.
    shutil.move(stash, root / NVME0)
    (root / NVME0 / "model").unlink()
    (root / NVME0 / "model").write_text("WD Blue SN580 1TB\n")
    back = health.read(20.0)
    (event,) = back.events
    message = "nvme0 (WD Blue SN580 1TB, S64DNL0T901234X) is back (firmware 3B4QFXO7)"
    assert event == HwEvent("nvme.found", "nvme0", message)
    assert back.drives[0].present and back.drives[0].temp_source == "smart"  # a new drive: SMART read at once
    assert len(pages.calls) == 2
    assert health.drives[0].model == "WD Blue SN580 1TB"


def test_enodev_from_the_ioctl_is_a_lost_drive(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    health = NvmeHealth(SysfsRoot(root), reader=Pages(OSError(errno.ENODEV, "No such device")))
    shutil.rmtree(root / NVME0)
    reading = health.read(0.0)
    assert [e.kind for e in reading.events] == ["nvme.lost"]
    assert "No such device" in reading.events[0].message
    assert reading.errors == ()


def test_without_hwmon_the_temperature_comes_from_smart() -> None:
    # The Pi 5 tree's drive has no nvme hwmon device: every tick reports the last SMART temperature.
    pages = Pages(page("warning-spare-temp.bin"))
    health = NvmeHealth(SysfsRoot(DATA / PI5), reader=pages)
    (drive,) = health.drives
    assert (drive.model, drive.temp_path) == ("WD PC SN740 SDDPTQD-256G", None)
    for now in (0.0, 5.0, 10.0):
        (sample,) = health.read(now).drives
        assert (sample.temp_c, sample.temp_source, sample.smart_t) == (pytest.approx(84.85), "smart", 0.0)
        assert sample.smart is not None
        assert sample.smart.critical_warning_names == ("spare_below_threshold", "temperature")
    assert len(pages.calls) == 1


def test_without_hwmon_a_vanished_drive_is_seen_by_its_directory(tree_copy: TreeCopy) -> None:
    root = tree_copy(PI5)
    health = NvmeHealth(SysfsRoot(root), reader=Pages(page("healthy.bin")))
    health.read(0.0)
    shutil.rmtree(root / NVME0)
    assert [e.kind for e in health.read(1.0).events] == ["nvme.lost"]


def test_rescan_finds_new_controllers_and_ignores_fabrics(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    health = NvmeHealth(SysfsRoot(root), reader=Pages(page("healthy.bin")))
    (root / "sys/class/nvme/nvme-fabrics").mkdir()
    nvme1 = root / "sys/devices/virtual/nvme-fabrics/ctl/nvme1"
    nvme1.mkdir(parents=True)
    (nvme1 / "model").write_text("Linux\n")
    (root / "sys/class/nvme/nvme1").symlink_to("../../devices/virtual/nvme-fabrics/ctl/nvme1")
    assert health.read(0.0).events == ()  # nothing is found until asked
    health.rescan()
    reading = health.read(1.0)
    assert [(e.kind, e.device) for e in reading.events] == [("nvme.found", "nvme1")]
    assert [d.name for d in health.drives] == ["nvme0", "nvme1"]
    assert [d.name for d in reading.drives] == ["nvme0", "nvme1"]
    health.rescan()
    assert health.read(2.0).events == ()


def test_no_controllers_is_no_drives(tmp_path: Path) -> None:
    reading = NvmeHealth(SysfsRoot(tmp_path), reader=Pages(b"")).read(0.0)
    assert reading == reading.__class__(t=0.0)


def test_ticks_do_not_glob(monkeypatch: pytest.MonkeyPatch) -> None:
    health = NvmeHealth(SysfsRoot(DATA / CM5), reader=Pages(page("healthy.bin")))

    def no_glob(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tick globbed")

    monkeypatch.setattr(Path, "glob", no_glob)
    monkeypatch.setattr(SysfsRoot, "glob", no_glob)
    for now in range(0, 200, 5):
        assert health.read(float(now)).errors == ()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s: expected a number above 0, got 0"):
        NvmeHealth(SysfsRoot(DATA / CM5), interval_s=0)
