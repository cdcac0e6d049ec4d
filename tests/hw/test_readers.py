"""The sysfs readers on recorded trees: exact values, failures as error lines, lookup by name, and the parsers."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw import RealBackend, SimBackend, SysfsRoot, make_backend
from nodeagent.hw.system import (
    Memory,
    detect_board,
    meminfo_mb,
    parse_cpu_list,
    parse_loadavg,
    parse_meminfo,
)
from nodeagent.hw.thermal import SocTemperature
from nodeagent.hw.throttle import parse_throttled
from tests.hw.trees import DATA, TREES, VCGENCMD

# Every replay gets the recorded PMIC output as its vcgencmd, as trees.recorded_backend does.
Replay = functools.partial(RealBackend, vcgencmd=str(VCGENCMD))

CM5 = "cm5-nanocluster"
PI5 = "pi5-hwmon-only"
FW = "sys/devices/platform/soc@107c000000/soc@107c000000:firmware"
TreeCopy = Callable[[str], Path]


def _write(root: Path, rel: str, text: str) -> None:
    # Replace rather than rewrite: the recorded file may be a read-only checkout.
    path = root / rel
    path.unlink()
    path.write_text(text)


# --- exact values from the recorded trees -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TREES)
def test_recorded_sample(name: str) -> None:
    want = TREES[name]
    sample = Replay(DATA / name).read(1234.5)
    assert sample.t == 1234.5
    assert sample.temp_c == pytest.approx(want.temp_c)
    assert sample.freq_mhz == want.freq_mhz
    assert sample.governor == want.governor
    assert sample.throttled == want.throttled
    assert sample.throttle_names == want.throttle_names
    assert sample.load1 == pytest.approx(want.load1)
    assert (sample.mem_total_mb, sample.mem_avail_mb) == (want.mem_total_mb, want.mem_avail_mb)
    assert sample.errors == ()


@pytest.mark.parametrize("name", TREES)
def test_recorded_facts(name: str) -> None:
    want = TREES[name]
    facts = Replay(DATA / name).facts()
    assert facts.board == want.board
    assert facts.model == want.model
    assert facts.serial == want.serial
    assert facts.hostname == want.hostname
    assert facts.cores == want.cores
    assert facts.memory_mb == want.mem_total_mb
    assert facts.cpu == want.cpu
    assert facts.slot is None


@pytest.mark.parametrize("name", TREES)
def test_temperature_source(name: str) -> None:
    sensor = SocTemperature(SysfsRoot(DATA / name))
    assert sensor.path == str(DATA / name / TREES[name].temp_file)


def test_configured_board_overrides_detection() -> None:
    assert Replay(DATA / CM5, board="nanocluster").facts().board == "nanocluster"


def test_misspelt_board_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"board: .*compute-blade.*got 'nano-cluster'"):
        Replay(DATA / CM5, board="nano-cluster")


@pytest.mark.parametrize(
    ("model", "compatible", "board"),
    [
        ("Raspberry Pi Compute Module 5 Rev 1.0", ("raspberrypi,5-compute-module", "brcm,bcm2712"), "generic"),
        ("Raspberry Pi 5 Model B Rev 1.0", ("raspberrypi,5-model-b", "brcm,bcm2712"), "pi5"),
        ("Raspberry Pi Compute Module 5 on Compute Blade", (), "compute-blade"),
        ("Raspberry Pi Compute Module 5", ("sipeed,nanocluster", "brcm,bcm2712"), "nanocluster"),
        ("Raspberry Pi Compute Module 5 on CM5 IO Board", (), "cm5-io-board"),
        ("", (), "generic"),
    ],
)
def test_detect_board(model: str, compatible: tuple[str, ...], board: str) -> None:
    assert detect_board(model, compatible) == board
    assert detect_board(model, compatible, configured="compute-blade") == "compute-blade"


# --- throttling ---------------------------------------------------------------------------------------------------


def test_under_voltage_alarm_sets_bit_16(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    _write(root, f"{FW}/raspberrypi-hwmon/hwmon/hwmon3/in0_lcrit_alarm", "1\n")
    sample = Replay(root).read(1.0)
    assert sample.throttled == 0x10000
    assert sample.throttle_names == ("under_voltage_occurred",)


def test_alarm_alone_without_get_throttled(tree_copy: TreeCopy) -> None:
    # Mainline-based kernels have no get_throttled; the rpi_volt alarm still reports under-voltage.
    root = tree_copy(PI5)
    (root / FW / "get_throttled").unlink()
    backend = Replay(root)
    assert backend.read(1.0).throttled == 0x10000
    _write(root, f"{FW}/raspberrypi-hwmon/hwmon/hwmon1/in0_lcrit_alarm", "0\n")
    assert backend.read(2.0).throttled == 0


def test_configured_throttle_path(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    os.rename(root / FW / "get_throttled", root / "get_throttled")
    _write(root, f"{FW}/raspberrypi-hwmon/hwmon/hwmon3/in0_lcrit_alarm", "0\n")
    _write(root, "get_throttled", "80008\n")
    assert Replay(root, throttle_path="/get_throttled").read(1.0).throttled == 0x80008


def test_configured_throttle_path_that_is_missing_is_an_error_every_tick(tree_copy: TreeCopy) -> None:
    backend = Replay(tree_copy(CM5), throttle_path="/sys/nowhere/get_throttled")
    for now in (1.0, 2.0):
        sample = backend.read(now)
        assert sample.throttled is None
        assert any(e.startswith("throttle: ") and "No such file or directory" in e for e in sample.errors)


# --- failures are error lines, never exceptions --------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error_line(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    temp = root / "sys/devices/virtual/thermal/thermal_zone0/temp"
    temp.chmod(0)
    sample = Replay(root).read(1.0)
    assert sample.temp_c is None
    assert sample.errors == (f"temperature: {root}/sys/class/thermal/thermal_zone0/temp: Permission denied",)


def test_directory_in_place_of_a_file_is_an_error_line(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    temp = root / "sys/devices/virtual/thermal/thermal_zone0/temp"
    temp.unlink()
    temp.mkdir()
    sample = Replay(root).read(1.0)
    assert sample.temp_c is None
    assert sample.errors == (f"temperature: {root}/sys/class/thermal/thermal_zone0/temp: Is a directory",)
    assert sample.freq_mhz == 2400.0  # the other sensors are unaffected


@pytest.mark.parametrize(
    ("rel", "garbage", "field", "sensor"),
    [
        ("sys/devices/virtual/thermal/thermal_zone0/temp", "hot\n", "temp_c", "temperature"),
        ("sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "", "freq_mhz", "freq"),
        ("sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "\n", "governor", "governor"),
        (f"{FW}/get_throttled", "0xzz\n", "throttled", "throttle"),
        ("proc/meminfo", "MemTotal: lots\n", "mem_total_mb", "memory"),
        ("proc/meminfo", "MemTotal:        8245360 kB\n", "mem_avail_mb", "memory"),
        ("proc/loadavg", "\x00\x01\x02", "load1", "load"),
    ],
)
def test_garbage_is_an_error_line(tree_copy: TreeCopy, rel: str, garbage: str, field: str, sensor: str) -> None:
    root = tree_copy(CM5)
    _write(root, rel, garbage)
    sample = Replay(root).read(1.0)
    assert getattr(sample, field) is None
    assert len(sample.errors) == 1
    assert sample.errors[0].startswith(f"{sensor}: {root}/")


def test_file_vanishing_after_start(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    backend = Replay(root)
    (root / "proc/loadavg").unlink()
    sample = backend.read(1.0)
    assert sample.load1 is None
    assert sample.errors == (f"load: {root}/proc/loadavg: No such file or directory",)


def test_absent_sensors_warn_once_and_error_only_in_the_first_sample(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A machine with procfs but none of the Pi's sensors (a PC, a container).
    shutil.copytree(DATA / CM5 / "proc", tmp_path / "proc", symlinks=True)
    with caplog.at_level(logging.WARNING, logger="nodeagent.hw.real"):
        backend = Replay(tmp_path)
    assert len(caplog.records) == 3
    caplog.clear()
    first, second = backend.read(1.0), backend.read(2.0)
    assert [e.split(":")[0] for e in first.errors] == ["temperature", "freq", "throttle"]
    assert all("absent" in e for e in first.errors)
    assert second.errors == ()
    assert (second.temp_c, second.freq_mhz, second.throttled) == (None, None, None)
    assert second.load1 == 1.27
    assert caplog.records == []


# --- lookup by name, once ------------------------------------------------------------------------------------------


def test_hwmon_found_by_name_not_number(tree_copy: TreeCopy) -> None:
    root = tree_copy(PI5)
    hwmon = root / "sys/class/hwmon"
    # Renumber as another boot might: cpu_thermal becomes hwmon7, rpi_volt takes hwmon0.
    os.rename(hwmon / "hwmon0", hwmon / "hwmon7")
    os.rename(hwmon / "hwmon1", hwmon / "hwmon0")
    sysfs = SysfsRoot(root)
    assert sysfs.find_hwmon("cpu_thermal") == hwmon / "hwmon7"
    assert sysfs.find_hwmon("rpi_volt") == hwmon / "hwmon0"
    assert sysfs.find_hwmon("nvme") is None
    sample = Replay(sysfs).read(1.0)
    assert sample.temp_c == pytest.approx(48.95)
    assert sample.throttled == 0x50005
    assert sample.errors == ()


def test_thermal_zone_found_by_type(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    thermal = root / "sys/class/thermal"
    os.rename(thermal / "thermal_zone0", thermal / "thermal_zone3")
    assert SysfsRoot(root).find_thermal_zone("cpu-thermal") == thermal / "thermal_zone3"
    assert Replay(root).read(1.0).temp_c == pytest.approx(52.35)


def test_ticks_do_not_glob(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Replay(DATA / CM5)
    backend.facts()

    def no_glob(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tick globbed")

    monkeypatch.setattr(Path, "glob", no_glob)
    monkeypatch.setattr(SysfsRoot, "glob", no_glob)
    for now in range(5):
        assert backend.read(float(now)).errors == ()


def test_lookups_are_remembered_until_forget(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    sysfs = SysfsRoot(root)
    assert sysfs.find_hwmon("pwmfan") is not None
    os.rename(root / "sys/class/hwmon/hwmon2", root / "sys/class/hwmon/hwmon9")
    assert sysfs.find_hwmon("pwmfan") == root / "sys/class/hwmon/hwmon2"  # remembered, not rescanned
    sysfs.forget()
    assert sysfs.find_hwmon("pwmfan") == root / "sys/class/hwmon/hwmon9"


def test_root_relative_paths() -> None:
    sysfs = SysfsRoot(DATA / CM5)
    assert sysfs.path("/proc/loadavg") == sysfs.path("proc/loadavg") == DATA / CM5 / "proc/loadavg"
    assert sysfs.read_int("sys/devices/virtual/thermal/thermal_zone0/temp") == 52350
    assert sysfs.read_text("proc/device-tree/model") == "Raspberry Pi Compute Module 5 Rev 1.0"
    assert sysfs.exists("proc/device-tree/serial-number")
    assert not sysfs.exists("sys/class/hwmon/hwmon9")
    with pytest.raises(HardwareError, match=r"proc/nothing: No such file or directory"):
        sysfs.read_text("proc/nothing")
    with pytest.raises(HardwareError, match=r"expected a decimal integer, got 'Raspberry"):
        sysfs.read_int("proc/device-tree/model")


# --- make_backend --------------------------------------------------------------------------------------------------


def test_make_backend_auto_on_a_pi_is_real_and_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        backend = make_backend("auto", root=str(DATA / CM5), node_id="n3")
    assert isinstance(backend, RealBackend)
    assert caplog.records == []


def test_make_backend_auto_on_a_pc_warns_and_is_real(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "proc").mkdir()
    shutil.copy(DATA / CM5 / "proc/meminfo", tmp_path / "proc/meminfo")
    with caplog.at_level(logging.WARNING, logger="nodeagent.hw"):
        backend = make_backend("auto", root=str(tmp_path), node_id="n3")
    assert isinstance(backend, RealBackend)
    assert any("not a Raspberry Pi" in r.getMessage() for r in caplog.records)


def test_make_backend_auto_without_linux_warns_and_simulates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nodeagent.hw"):
        backend = make_backend("auto", root=str(tmp_path), node_id="n3")
    assert isinstance(backend, SimBackend)
    assert any("simulator" in r.getMessage() for r in caplog.records)


def test_make_backend_kinds() -> None:
    assert isinstance(make_backend("real", root=str(DATA / PI5), node_id="n"), RealBackend)
    sim = make_backend("sim", root=str(DATA / PI5), node_id="n", load_fn=lambda: 2.0)
    assert isinstance(sim, SimBackend)
    assert sim.facts().hostname == "pi5-lab"  # the host it runs on
    with pytest.raises(ConfigError, match=r"expected one of auto, real, sim, got 'mock'"):
        make_backend("mock", node_id="n")


# --- parsers: round trips in the kernel's formats, clean errors on garbage ------------------------------------------


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_throttled_round_trip(bits: int) -> None:
    assert parse_throttled(f"{bits:x}\n") == bits  # the kernel's "%x\n"


@given(st.text(max_size=20))
def test_throttled_garbage_is_a_value_error(text: str) -> None:
    try:
        bits = parse_throttled(text)
    except ValueError:
        return
    assert 0 <= bits < 2**32


@pytest.mark.parametrize("text", ["", "0x", "-5", "50005 1", "123456789", "5_0005", "g"])
def test_throttled_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected up to 8 hex digits"):
        parse_throttled(text)


_MEMINFO_NAME = st.from_regex(r"[A-Z][A-Za-z0-9_()]{0,14}", fullmatch=True)


@given(
    st.dictionaries(_MEMINFO_NAME, st.integers(min_value=0, max_value=2**48), max_size=30),
    st.integers(min_value=1024, max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
)
def test_meminfo_round_trip(extra: dict[str, int], total_kb: int, avail_kb: int) -> None:
    fields = {**extra, "MemTotal": total_kb, "MemAvailable": avail_kb}
    # The kernel's show_val_kb(): name and colon padded to 16 columns, value right-aligned in 8, then " kB".
    lines = [f"{name + ':':<16}{value:>8} kB" for name, value in fields.items()]
    lines.append(f"{'HugePages_Total:':<16}{0:>8}")  # page counts have no unit
    parsed = parse_meminfo("\n".join(lines) + "\n")
    assert parsed == {**fields, "HugePages_Total": 0}
    assert meminfo_mb(parsed) == (total_kb // 1024, avail_kb // 1024)
    wanted = {"MemTotal", "MemAvailable"}
    assert parse_meminfo("\n".join(lines), wanted) == {"MemTotal": total_kb, "MemAvailable": avail_kb}


@given(st.text(max_size=200))
def test_meminfo_garbage_is_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        meminfo_mb(parse_meminfo(text))


def test_meminfo_garbage_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 8 GB\n")
    with pytest.raises(HardwareError, match=r"proc/meminfo: unexpected line 'MemTotal: 8 GB'"):
        Memory(SysfsRoot(tmp_path)).read_mb()


_LOAD = st.tuples(st.integers(min_value=0, max_value=9999), st.integers(min_value=0, max_value=99))


@given(
    _LOAD,
    _LOAD,
    _LOAD,
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=0, max_value=2**22),
)
def test_loadavg_round_trip(
    l1: tuple[int, int], l5: tuple[int, int], l15: tuple[int, int], running: int, total: int, pid: int
) -> None:
    # The kernel's "%lu.%02lu %lu.%02lu %lu.%02lu %u/%d %d\n".
    text = f"{l1[0]}.{l1[1]:02d} {l5[0]}.{l5[1]:02d} {l15[0]}.{l15[1]:02d} {running}/{total} {pid}\n"
    assert parse_loadavg(text) == pytest.approx(tuple(a + b / 100 for a, b in (l1, l5, l15)))


@given(st.text(max_size=60))
def test_loadavg_garbage_is_a_value_error(text: str) -> None:
    try:
        loads = parse_loadavg(text)
    except ValueError:
        return
    assert all(x >= 0 for x in loads)


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-3", 4), ("0,2-5\n", 5), ("0-1,4,6-7", 5)])
def test_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


@pytest.mark.parametrize("text", ["", "a-b", "0-", "0,,1", "3-1"])
def test_cpu_list_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="CPU list"):
        parse_cpu_list(text)
