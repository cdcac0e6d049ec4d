"""Every fan backend against real parts: copies of recorded sysfs trees, gpiozero's mock pins, a real
pseudo-terminal playing the smart fan unit, and a register map standing in for the I2C bus (no I2C here).

Helpers (``FakeClock``, ``RegisterBus``, ``FanUnitPlayer``, ``break_file``, ``merged_root``) are shared with
``test_failsafe.py``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw import SimBackend, SimConfig, SysfsRoot
from nodeagent.hw import fanunit_proto as proto
from nodeagent.hw.fans.base import PRESETS, FanConfig, clamp_duty
from nodeagent.hw.fans.emc import Emc2101Fan, Emc2301Fan
from nodeagent.hw.fans.factory import make_fan
from nodeagent.hw.fans.pwmfan import PwmFan
from nodeagent.hw.fans.sim import SimFan
from nodeagent.hw.fans.smartunit import SmartFanUnit, open_uart
from nodeagent.hw.fans.sysfs_pwm import SysfsPwmFan, find_pwmchip
from nodeagent.protocol.typecheck import FieldError, build
from tests.hw.trees import DATA

CM5 = "cm5-nanocluster"
BLADE = "cm5-blade-pwm"
HWMON_FAN = "sys/devices/platform/cooling_fan/hwmon/hwmon2"
PWM0 = "sys/devices/platform/axi/1000120000.pcie/1f00098000.pwm/pwm/pwmchip0"
TreeCopy = Callable[[str], Path]


# --- shared helpers -----------------------------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def text(root: Path, rel: str) -> str:
    return (root / rel).read_text().strip()


def break_file(root: Path, rel: str) -> Path:
    """Make ``rel`` unwritable for any user, root included: a directory where the attribute file was."""
    path = root / rel
    path.unlink()
    path.mkdir()
    return path


def merged_root(tmp_path: Path, *names: str) -> Path:
    """One writable root holding copies of several recorded trees (a CM5 with a fan connector and RP1 PWM)."""
    dest = tmp_path / "merged"
    for name in names:
        shutil.copytree(DATA / name, dest, symlinks=True, dirs_exist_ok=True)
    return dest


class RegisterBus:
    """An I2C chip's register map standing in for smbus2.SMBus: there is no I2C bus on a test machine."""

    def __init__(self, address: int, regs: dict[int, int]) -> None:
        self.address = address
        self.regs = dict(regs)
        self.writes: list[tuple[int, int]] = []
        self.fail_writes = False
        self.closed = False

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        if i2c_addr != self.address:
            raise OSError(errno.ENXIO, "No such device or address")
        return self.regs.get(register, 0)

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        if i2c_addr != self.address:
            raise OSError(errno.ENXIO, "No such device or address")
        if self.fail_writes:
            raise OSError(errno.EIO, "Input/output error")
        self.writes.append((register, value))
        self.regs[register] = value

    def close(self) -> None:
        self.closed = True

    def factory(self, expect_bus: int = 1) -> Callable[[int], RegisterBus]:
        def open_bus(bus: int) -> RegisterBus:
            assert bus == expect_bus
            return self

        return open_bus


class FanUnitPlayer:
    """The smart fan unit's end of a real pseudo-terminal: decodes what the blade sends, sends unit frames back."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.decoder = proto.Decoder()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def receive(self, count: int = 1, timeout_s: float = 5.0) -> list[proto.Message]:
        """The next ``count`` messages the blade sent (waits on the pty, never sleeps)."""
        messages: list[proto.Message] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count:
            ready, _, _ = select.select([self.master], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise AssertionError(f"the blade sent {messages}, expected {count} messages")
            messages += [proto.parse_frame(f) for f in self.decoder.feed(os.read(self.master, 1024))]
        return messages

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def poll_until(unit: SmartFanUnit, done: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait on the UART (select) and poll until ``done()``; pty data crosses a kernel work queue, not instantly."""
    deadline = time.monotonic() + timeout_s
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the unit's frames did not arrive"
        select.select([unit.fileno()], [], [], remaining)
        unit.poll()


@pytest.fixture
def mock_factory() -> Iterator[Any]:
    """gpiozero's MockFactory with PWM-capable pins (gpiozero 1.6 keeps pins class-wide: reset around the test)."""
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not importable (apt install python3-gpiozero)")
    factory = mock.MockFactory(pin_class=mock.MockPWMPin)
    factory.reset()
    try:
        yield factory
    finally:
        factory.reset()


# --- FanConfig and duty clamping ----------------------------------------------------------------------------------


def test_clamp_duty() -> None:
    assert clamp_duty(150) == 100.0
    assert clamp_duty(-5) == 0.0
    assert clamp_duty(0, 20) == 0.0  # off stays off
    assert clamp_duty(5, 20) == 20.0
    assert clamp_duty(math.nan) == 100.0  # a NaN from a broken policy means full, never off


def test_config_defaults() -> None:
    cfg = FanConfig()
    assert cfg.backend == "auto"
    assert cfg.pwm_chip == "1f00098000.pwm"
    assert cfg.pulses_per_rev == 2
    assert cfg.uart_device == "/dev/ttyAMA4" and cfg.uart_baud == 115200
    assert FanConfig(backend="sysfs-pwm").pwm_frequency_hz == 25_000.0
    assert FanConfig(backend="gpio").pwm_frequency_hz == 50.0
    assert FanConfig(backend="gpio", frequency_hz=100).pwm_frequency_hz == 100.0
    assert PRESETS["nanocluster-slot1"].gpio_pin == 13
    assert PRESETS["compute-blade-standard"].tach_pin == 13


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"min_duty_pct": 120}, "fan.min_duty_pct"),
        ({"frequency_hz": 0.0}, "fan.frequency_hz"),
        ({"pulses_per_rev": 0}, "fan.pulses_per_rev"),
        ({"uart_baud": 115201}, "fan.uart_baud"),
        ({"i2c_address": 0x80}, "fan.i2c_address"),
        ({"backend": "gpio", "gpio_pin": 13, "tach_pin": 13}, "fan.tach_pin"),
        ({"backend": "pwm"}, "fan.backend"),
    ],
)
def test_config_range_errors(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        FanConfig(**kwargs)


def test_config_from_toml_table() -> None:
    cfg = build(FanConfig, {"backend": "emc2301", "i2c_address": 0x2E, "pwm_chip": 2}, "fan[0]", strict=True)
    assert (cfg.backend, cfg.i2c_address, cfg.pwm_chip) == ("emc2301", 0x2E, 2)
    with pytest.raises(FieldError, match=r'fan\[0\]\.gpio_pins: unknown key \(did you mean "gpio_pin"\?\)'):
        build(FanConfig, {"gpio_pins": 13}, "fan[0]", strict=True)
    with pytest.raises(FieldError, match=r"fan\[0\]\.backend: expected one of"):
        build(FanConfig, {"backend": "pwm-fan"}, "fan[0]", strict=True)


# --- pwmfan hwmon -------------------------------------------------------------------------------------------------


def test_pwmfan_duty_rpm_and_full(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    (root / HWMON_FAN / "fan1_input").write_text("2763\n")
    with PwmFan(SysfsRoot(root)) as fan:
        assert fan.duty_pct == pytest.approx(75 * 100 / 255)  # what the kernel had set
        fan.set_duty(50)
        assert text(root, f"{HWMON_FAN}/pwm1") == "128"
        assert fan.duty_pct == 50.0
        assert fan.read_rpm() == 2763
        fan.set_duty(250)
        assert text(root, f"{HWMON_FAN}/pwm1") == "255"
        fan.set_duty(0)
        fan.full()
        assert text(root, f"{HWMON_FAN}/pwm1") == "255"
        assert fan.duty_pct == 100.0
    assert not (root / HWMON_FAN / "pwm1_enable").exists()  # absent stays absent: writes never create files


def test_pwmfan_takes_and_returns_pwm1_enable(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    (root / HWMON_FAN / "pwm1_enable").write_text("2\n")
    fan = PwmFan(SysfsRoot(root))
    assert text(root, f"{HWMON_FAN}/pwm1_enable") == "1"
    fan.close()
    assert text(root, f"{HWMON_FAN}/pwm1_enable") == "2"  # the original value, as found


def test_pwmfan_found_by_name_not_number(tree_copy: TreeCopy) -> None:
    root = tree_copy("pi5-hwmon-only")  # its pwmfan has another hwmon number than the CM5 tree's
    fan = PwmFan(SysfsRoot(root))
    assert fan.dev.dir.name != "hwmon2"
    assert fan.read_rpm() == 2763


def test_pwmfan_missing(tree_copy: TreeCopy) -> None:
    with pytest.raises(HardwareError, match=r"hwmon 'pwmfan': not found under .*sys/class/hwmon.*cooling_fan"):
        PwmFan(SysfsRoot(tree_copy(BLADE)))


def test_pwmfan_unwritable_names_device_and_path(tree_copy: TreeCopy, caplog: pytest.LogCaptureFixture) -> None:
    root = tree_copy(CM5)
    fan = PwmFan(SysfsRoot(root))
    break_file(root, f"{HWMON_FAN}/pwm1")
    with pytest.raises(HardwareError) as info:
        fan.set_duty(40)
    assert str(info.value) == f"hwmon 'pwmfan' ({root}/sys/class/hwmon/hwmon2): pwm1 not writable: Is a directory"
    assert fan.duty_pct == pytest.approx(75 * 100 / 255)  # unchanged: the write did not happen
    with caplog.at_level(logging.ERROR):
        fan.full()  # must not raise
    assert "pwm1 not writable" in caplog.text and "hwmon 'pwmfan'" in caplog.text


# --- sysfs PWM ----------------------------------------------------------------------------------------------------


def test_sysfs_pwm_running_channel_keeps_its_duty(tree_copy: TreeCopy) -> None:
    root = tree_copy(BLADE)
    fan = SysfsPwmFan(SysfsRoot(root), chip="1f00098000.pwm", channel=1, frequency_hz=25_000)
    assert fan.name == "pwm 1f00098000.pwm/1"
    assert fan.duty_pct == 40.0
    assert [text(root, f"{PWM0}/pwm1/{f}") for f in ("period", "duty_cycle", "polarity", "enable")] == [
        "40000",
        "16000",
        "normal",
        "1",
    ]
    fan.set_duty(75)
    assert text(root, f"{PWM0}/pwm1/duty_cycle") == "30000"
    fan.full()
    assert text(root, f"{PWM0}/pwm1/duty_cycle") == "40000"
    assert text(root, f"{PWM0}/pwm1/enable") == "1"
    assert fan.read_rpm() is None  # no tach given
    assert text(root, f"{PWM0}/export") == ""  # already exported: not touched


def test_sysfs_pwm_frequency_and_polarity(tree_copy: TreeCopy) -> None:
    root = tree_copy(BLADE)
    SysfsPwmFan(SysfsRoot(root), channel=1, frequency_hz=50, inverted=True)
    # 50 Hz = 20 ms period. The inverted polarity means the running duty could not be trusted: start at 100 %.
    assert text(root, f"{PWM0}/pwm1/period") == "20000000"
    assert text(root, f"{PWM0}/pwm1/duty_cycle") == "20000000"
    assert text(root, f"{PWM0}/pwm1/polarity") == "inversed"
    assert text(root, f"{PWM0}/pwm1/enable") == "1"


def test_sysfs_pwm_exports_a_channel(tree_copy: TreeCopy) -> None:
    root = tree_copy(BLADE)
    channel_dir = root / PWM0 / "pwm0"
    waits: list[float] = []

    def kernel(seconds: float) -> None:
        # What the kernel does on a write to export: the channel's directory appears, disabled and unconfigured.
        waits.append(seconds)
        assert text(root, f"{PWM0}/export") == "0"
        channel_dir.mkdir(exist_ok=True)
        for name, value in (("period", "0"), ("duty_cycle", "0"), ("enable", "0"), ("polarity", "normal")):
            (channel_dir / name).write_text(value + "\n")

    fan = SysfsPwmFan(SysfsRoot(root), chip="1f00098000.pwm", channel=0, sleep=kernel, clock=FakeClock())
    assert len(waits) == 1
    assert [text(root, f"{PWM0}/pwm0/{f}") for f in ("period", "duty_cycle", "enable")] == ["40000", "40000", "1"]
    assert fan.duty_pct == 100.0  # a channel that was not running starts at full until the policy says otherwise
    fan.set_duty(25)
    assert text(root, f"{PWM0}/pwm0/duty_cycle") == "10000"


def test_sysfs_pwm_export_timeout(tree_copy: TreeCopy) -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.t += seconds

    with pytest.raises(HardwareError, match=r"pwmchip '1f00098000.pwm' \(.*pwmchip0\): exported channel 0, but pwm0/"):
        SysfsPwmFan(SysfsRoot(tree_copy(BLADE)), channel=0, export_timeout_s=0.5, sleep=sleep, clock=clock)
    assert clock.t == pytest.approx(0.5, abs=0.02)


def test_pwmchip_lookup(tree_copy: TreeCopy) -> None:
    root = SysfsRoot(tree_copy(BLADE))
    assert find_pwmchip(root, "1f00098000.pwm").name == "pwmchip0"
    assert find_pwmchip(root, "1f0009c000.pwm").name == "pwmchip2"
    assert find_pwmchip(root, 2).name == "pwmchip2"
    assert find_pwmchip(root, "0").name == "pwmchip0"
    with pytest.raises(HardwareError, match=r"'1f00099000.pwm': not found .*pwmchip0=1f00098000.pwm, pwmchip2="):
        find_pwmchip(root, "1f00099000.pwm")
    with pytest.raises(HardwareError, match=r"channel 4 does not exist \(npwm = 4\)"):
        SysfsPwmFan(root, channel=4)


def test_sysfs_pwm_unwritable(tree_copy: TreeCopy) -> None:
    root = tree_copy(BLADE)
    fan = SysfsPwmFan(SysfsRoot(root), channel=1)
    break_file(root, f"{PWM0}/pwm1/duty_cycle")
    with pytest.raises(HardwareError, match=r"^pwmchip '1f00098000.pwm' \(.*/pwmchip0\): pwm1/duty_cycle not writable"):
        fan.force_full()


# --- GPIO (gpiozero mock pins) ------------------------------------------------------------------------------------


def test_gpio_fan_duty(mock_factory: Any) -> None:
    from nodeagent.hw.fans.gpio import GpioFan

    with GpioFan(13, frequency_hz=50, pin_factory=mock_factory) as fan:
        pin = mock_factory.pin(13)
        assert pin.frequency == 50
        assert pin.state == 1.0  # starts at full
        fan.set_duty(40)
        assert pin.state == pytest.approx(0.4)
        assert fan.duty_pct == 40.0
        fan.set_duty(250)
        assert pin.state == 1.0
        fan.set_duty(-1)
        assert pin.state == 0.0
        fan.full()
        assert pin.state == 1.0
        assert fan.read_rpm() is None


def test_gpio_fan_active_low(mock_factory: Any) -> None:
    from nodeagent.hw.fans.gpio import GpioFan

    with GpioFan(13, active_high=False, pin_factory=mock_factory) as fan:
        pin = mock_factory.pin(13)
        assert pin.state == 0.0  # full, for a fan that runs when the pin is low
        fan.set_duty(30)
        assert pin.state == pytest.approx(0.7)


def drive_pulses(pin: Any, clock: FakeClock, count: int, interval_s: float) -> None:
    """A tach line pulled low ``count`` times, ``interval_s`` apart, starting at ``clock.t``."""
    for _ in range(count):
        pin.drive_low()
        pin.drive_high()
        clock.t += interval_s


def test_gpio_tach_rpm(mock_factory: Any) -> None:
    from nodeagent.hw.fans.gpio import GpioFan

    clock = FakeClock(100.0)
    with GpioFan(13, tach_pin=6, pulses_per_rev=2, tach_window_s=1.0, pin_factory=mock_factory, clock=clock) as fan:
        tach = mock_factory.pin(6)
        assert fan.read_rpm() == 0  # no pulses yet
        drive_pulses(tach, clock, 50, 0.01)  # 100 pulses/s at 2 per revolution = 3000 RPM
        assert fan.read_rpm() == 3000
        drive_pulses(tach, clock, 200, 0.02)  # slows to 1500 RPM; only the last second counts
        assert fan.read_rpm() == 1500
        clock.t += 5.0  # stopped: the old pulses leave the window
        assert fan.read_rpm() == 0


def test_sysfs_pwm_with_gpio_tach(tree_copy: TreeCopy, mock_factory: Any) -> None:
    root = tree_copy(BLADE)
    cfg = FanConfig(backend="sysfs-pwm", channel=1, tach_pin=13, tach_window_s=2.0)
    fan = make_fan(cfg, SysfsRoot(root), pin_factory=mock_factory)
    assert isinstance(fan, SysfsPwmFan) and fan.tach is not None
    drive_pulses(mock_factory.pin(13), FakeClock(), 10, 0.0)
    assert fan.tach.pulses == 10  # the tach pin feeds this PWM fan
    assert isinstance(fan.read_rpm(), int)
    fan.close()


def test_failed_pwm_fan_releases_its_tach_pin(tree_copy: TreeCopy, mock_factory: Any) -> None:
    from nodeagent.hw.fans.gpio import TachCounter

    cfg = FanConfig(backend="sysfs-pwm", channel=7, tach_pin=13)
    with pytest.raises(HardwareError, match="channel 7 does not exist"):
        make_fan(cfg, SysfsRoot(tree_copy(BLADE)), pin_factory=mock_factory)
    TachCounter(13, pin_factory=mock_factory).close()  # would raise "pin in use" had the failed fan kept it


def test_make_fan_gpio(mock_factory: Any) -> None:
    fan = make_fan(PRESETS["nanocluster-slot1"], SysfsRoot("/nonexistent"), pin_factory=mock_factory)
    assert fan is not None and fan.name == "gpio GPIO13"
    assert mock_factory.pin(13).frequency == 50
    fan.close()


# --- smart fan unit (real pseudo-terminal) ------------------------------------------------------------------------


def test_smart_unit_commands(player: FanUnitPlayer) -> None:
    with SmartFanUnit(player.path) as unit:
        assert unit.duty_pct is None  # the unit cannot be asked what it runs at
        unit.set_duty(55.4)
        unit.set_led(255, 0, 16)
        unit.full()
        assert player.receive(3) == [
            proto.SetFanPercent(55),
            proto.SetLed(red=255, green=0, blue=16),
            proto.SetFanPercent(100),
        ]
        assert unit.duty_pct == 100.0


def test_smart_unit_reports(player: FanUnitPlayer) -> None:
    clock = FakeClock()
    presses: list[int] = []
    unit = SmartFanUnit(player.path, clock=clock, on_button=lambda: presses.append(1))
    try:
        assert unit.read_rpm() is None  # nothing heard yet
        # The unit's report, split mid-frame, with line noise and a corrupted frame in front.
        wire = b"\x00\x13" + proto.fan_rpm(2400)[:-1] + proto.fan_rpm(2413) + proto.airflow_temp(31.5)
        player.send(wire[:9])
        player.send(wire[9:] + proto.button_press())
        poll_until(unit, lambda: unit.button_presses == 1)
        assert unit.read_rpm() == 2413
        assert unit.airflow_temp_c == pytest.approx(31.5)
        assert presses == [1]
        assert unit.decoder.malformed == 1
        clock.t += 6.5  # three reports missed: the RPM is no longer known
        assert unit.read_rpm() is None
    finally:
        unit.close()


def test_smart_unit_button_callback_errors_are_logged(player: FanUnitPlayer, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("handler bug")

    with SmartFanUnit(player.path, on_button=broken) as unit:
        player.send(proto.button_press() + proto.fan_rpm(900))
        with caplog.at_level(logging.ERROR):
            poll_until(unit, lambda: unit.rpm == 900)
        assert unit.button_presses == 1
    assert "handler bug" in caplog.text


def test_smart_unit_detect(player: FanUnitPlayer) -> None:
    with SmartFanUnit(player.path) as unit:
        assert unit.detect(0.05) is False  # silence (a real 50 ms wait on the pty)
        player.send(proto.fan_rpm(1800))
        assert unit.detect(5.0) is True  # returns as soon as the start byte arrives
        poll_until(unit, lambda: unit.rpm == 1800)


def test_smart_unit_raw_mode_keeps_every_byte(player: FanUnitPlayer) -> None:
    # 0x7F is ERASE and 0x0D becomes 0x0A in a cooked tty: raw mode must pass them untouched.
    fd = open_uart(player.path, 115200)
    try:
        player.send(bytes([0x0D, 0x7F, 0x03, 0x11]))
        select.select([fd], [], [], 5.0)
        assert os.read(fd, 16) == bytes([0x0D, 0x7F, 0x03, 0x11])
    finally:
        os.close(fd)


def test_smart_unit_open_errors() -> None:
    with pytest.raises(HardwareError, match=r"^smart fan unit \(/nonexistent/ttyAMA4\): cannot open: No such file"):
        SmartFanUnit("/nonexistent/ttyAMA4")


def test_make_fan_auto_finds_smart_unit(player: FanUnitPlayer, tree_copy: TreeCopy) -> None:
    def opener(path: str, baud: int) -> int:
        fd = open_uart(path, baud)
        player.send(proto.fan_rpm(2000))  # the unit's next report, after the blade starts listening
        return fd

    cfg = FanConfig(uart_device=player.path, detect_timeout_s=5.0)
    fan = make_fan(cfg, SysfsRoot(tree_copy(CM5)), serial_opener=opener)
    assert isinstance(fan, SmartFanUnit)
    fan.close()


def test_make_fan_auto_falls_back(player: FanUnitPlayer, tree_copy: TreeCopy, caplog: pytest.LogCaptureFixture) -> None:
    cfg = FanConfig(uart_device=player.path, detect_timeout_s=0.05)
    with caplog.at_level(logging.WARNING):
        fan = make_fan(cfg, SysfsRoot(tree_copy(CM5)))
    assert isinstance(fan, PwmFan)
    assert "no smart fan unit spoke" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        none = make_fan(FanConfig(uart_device="/nonexistent/tty"), SysfsRoot(tree_copy(BLADE)))
    assert none is None
    assert "no fan found" in caplog.text


# --- EMC2301 / EMC2101 (register map as the bus) ------------------------------------------------------------------


def test_emc2301(caplog: pytest.LogCaptureFixture) -> None:
    # Fan config 1 as after power-on (0x2B: RANGE m=2, 5 edges) with the RPM algorithm switched on.
    bus = RegisterBus(0x2F, {0xFD: 0x37, 0x32: 0x2B | 0x80, 0x2A: 0x00, 0x30: 0x80})
    fan = Emc2301Fan(smbus_factory=bus.factory())
    assert bus.writes == [(0x32, 0x2B)]  # direct mode: EN_ALGO cleared, the rest kept; polarity left normal
    assert fan.name == "EMC2301 (/dev/i2c-1 0x2f)"
    assert fan.duty_pct == pytest.approx(0x80 * 100 / 255)
    fan.set_duty(50)
    fan.set_duty(0)
    assert bus.writes[1:] == [(0x30, 128), (0x30, 0)]
    count = 1966  # 3_932_160 * 2 / 1966 = 4000 RPM
    bus.regs[0x3E], bus.regs[0x3F] = count >> 5, (count & 0x1F) << 3
    assert fan.read_rpm() == 4000
    bus.regs[0x3E], bus.regs[0x3F] = 0xFF, 0xF8  # saturated count: no pulses
    assert fan.read_rpm() == 0
    bus.regs[0x32] |= 0x80  # something re-enabled the algorithm behind our back
    fan.full()
    assert bus.writes[-2:] == [(0x32, 0x2B), (0x30, 0xFF)]
    fan.close()
    assert bus.closed


def test_emc2301_inverted_and_errors() -> None:
    bus = RegisterBus(0x2F, {0xFD: 0x37, 0x32: 0x2B})
    fan = Emc2301Fan(smbus_factory=bus.factory(), inverted=True)
    assert bus.writes == [(0x2A, 0x01)]
    bus.fail_writes = True
    with pytest.raises(HardwareError, match=r"^EMC2301 \(/dev/i2c-1 0x2f\): register 0x30 write failed: Input/output"):
        fan.set_duty(10)
    wrong = RegisterBus(0x2F, {0xFD: 0x34})
    with pytest.raises(HardwareError, match=r"product id 0x34, expected 0x37"):
        Emc2301Fan(smbus_factory=wrong.factory())
    assert wrong.closed
    elsewhere = RegisterBus(0x2E, {0xFD: 0x37})
    with pytest.raises(HardwareError, match=r"register 0xfd read failed: No such device"):
        Emc2301Fan(smbus_factory=elsewhere.factory())


def test_emc2101() -> None:
    # As the fan unit's EMC2101 might be left: DAC output on, lookup table in charge.
    bus = RegisterBus(0x4C, {0xFD: 0x16, 0x03: 0x10, 0x4A: 0x00, 0x4C: 25})
    fan = Emc2101Fan(bus=3, smbus_factory=bus.factory(3))
    assert bus.writes == [(0x03, 0x04), (0x4A, 0x20)]  # TACH input on, PWM mode; fan setting writable
    assert fan.duty_pct == pytest.approx(25 * 100 / 63)
    fan.set_duty(50)
    assert bus.writes[-1] == (0x4C, 32)
    bus.regs[0x46], bus.regs[0x47] = 2700 & 0xFF, 2700 >> 8  # 5_400_000 / 2700 = 2000 RPM
    assert fan.read_rpm() == 2000
    bus.regs[0x46] = bus.regs[0x47] = 0xFF
    assert fan.read_rpm() == 0
    fan.full()
    assert bus.writes[-1] == (0x4C, 63)
    assert Emc2101Fan(smbus_factory=RegisterBus(0x4C, {0xFD: 0x28}).factory()).name == "EMC2101 (/dev/i2c-1 0x4c)"


def test_make_fan_emc_and_default_bus() -> None:
    bus = RegisterBus(0x2E, {0xFD: 0x37, 0x32: 0x2B})
    cfg = FanConfig(backend="emc2301", i2c_address=0x2E, name="chassis")
    fan = make_fan(cfg, SysfsRoot("/"), smbus_factory=bus.factory())
    assert fan is not None and fan.name == "chassis"
    # Without a factory the real bus is opened: on a machine with no /dev/i2c-1 that is a HardwareError.
    if not os.path.exists("/dev/i2c-1"):
        with pytest.raises(HardwareError, match=r"^EMC2101 \(/dev/i2c-1 0x4c\): "):
            make_fan(FanConfig(backend="emc2101"), SysfsRoot("/"))


# --- simulator and make_fan ---------------------------------------------------------------------------------------


def test_sim_fan() -> None:
    sim = SimBackend("n1", SimConfig(), lambda: 0.0)
    fan = SimFan(sim)
    assert fan.duty_pct == 40.0  # the simulator's starting duty
    assert fan.read_rpm() is None  # no sample seen yet
    fan.set_duty(70)
    sample = sim.read(0.0)
    assert sample.fan_duty_pct == 70.0
    fan.observe(sample)
    assert fan.read_rpm() == 3500
    fan.full()
    assert sim.read(1.0).fan_duty_pct == 100.0
    sim.fail_sensor("fan")
    fan.observe(sim.read(2.0))
    assert fan.read_rpm() is None


def test_make_fan_backends(tree_copy: TreeCopy) -> None:
    assert make_fan(FanConfig(backend="none"), SysfsRoot("/")) is None
    fan = make_fan(FanConfig(backend="pwmfan", min_duty_pct=30), SysfsRoot(tree_copy(CM5)))
    assert isinstance(fan, PwmFan)
    fan.set_duty(10)
    assert fan.duty_pct == 30.0
    pwm = make_fan(FanConfig(backend="sysfs-pwm", pwm_chip=0, channel=1), SysfsRoot(tree_copy(BLADE)))
    assert isinstance(pwm, SysfsPwmFan) and pwm.period_ns == 40_000
