"""``picluster-agent failsafe``: every backend ends at 100 %, a broken fan is reported and the others still go full."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent import failsafe as fs
from nodeagent.hw import SysfsRoot
from nodeagent.hw import fanunit_proto as proto
from nodeagent.hw.fans.base import FanConfig
from tests.hw.test_fans import (
    CM5,
    HWMON_FAN,
    PWM0,
    FanUnitPlayer,
    RegisterBus,
    break_file,
    merged_root,
    text,
)

BLADE = "cm5-blade-pwm"


@pytest.fixture(autouse=True)
def release_held() -> Iterator[None]:
    """The fail-safe keeps its fans open on purpose; the tests close them so pins and ttys do not leak."""
    yield
    for fan in fs.HELD:
        fan.close()
    fs.HELD.clear()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A CM5 with the fan connector's hwmon and RP1's PWM chips (copies of two recorded trees)."""
    return merged_root(tmp_path, CM5, BLADE)


def emc_bus() -> RegisterBus:
    return RegisterBus(0x2F, {0xFD: 0x37, 0x32: 0x2B | 0x80, 0x30: 0x40})


def run(cfgs: list[FanConfig], root: Path, **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = fs.failsafe(cfgs, SysfsRoot(root), out=out, err=err, **kwargs)
    return status, out.getvalue(), err.getvalue()


def test_every_backend_goes_full(root: Path, player: FanUnitPlayer) -> None:
    bus = emc_bus()
    (root / HWMON_FAN / "pwm1_enable").write_text("0\n")  # someone turned the fan's PWM and supply off
    cfgs = [
        FanConfig(backend="pwmfan"),
        FanConfig(backend="sysfs-pwm", channel=1, frequency_hz=25_000),
        FanConfig(backend="smart-unit", uart_device=player.path),
        FanConfig(backend="emc2301"),
        FanConfig(backend="none"),
    ]
    status, out, err = run(cfgs, root, smbus_factory=bus.factory())
    assert (status, err) == (0, "")
    assert text(root, f"{HWMON_FAN}/pwm1_enable") == "1"
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"
    assert text(root, f"{PWM0}/pwm1/duty_cycle") == text(root, f"{PWM0}/pwm1/period") == "40000"
    assert text(root, f"{PWM0}/pwm1/enable") == "1"
    assert player.receive(1) == [proto.SetFanPercent(100)]
    assert bus.regs[0x30] == 0xFF and bus.regs[0x32] & 0x80 == 0
    assert out.count(": full") == 4
    assert "fan[4] none: no fan configured" in out


def test_gpio_fan_goes_full(root: Path) -> None:
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not importable (apt install python3-gpiozero)")
    factory = mock.MockFactory(pin_class=mock.MockPWMPin)
    factory.reset()
    try:
        cfgs = [FanConfig(backend="gpio", gpio_pin=13), FanConfig(backend="gpio", gpio_pin=18, inverted=True)]
        status, _, err = run(cfgs, root, pin_factory=factory)
        assert (status, err) == (0, "")
        assert factory.pin(13).state == 1.0
        assert factory.pin(18).state == 0.0  # active-low fan: fully on is a low pin
        # Still driven after failsafe() returned: the fans are held, not closed.
        assert [type(f).__name__ for f in fs.HELD] == ["GpioFan", "GpioFan"]
    finally:
        for fan in fs.HELD:
            fan.close()
        fs.HELD.clear()
        factory.reset()


def test_broken_fan_reported_others_still_full(root: Path, player: FanUnitPlayer) -> None:
    bus = emc_bus()
    break_file(root, f"{PWM0}/pwm1/duty_cycle")
    cfgs = [
        FanConfig(backend="sysfs-pwm", channel=1),  # broken: cannot even be opened
        FanConfig(backend="pwmfan"),
        FanConfig(backend="smart-unit", uart_device=player.path),
        FanConfig(backend="emc2301", name="rack"),
    ]
    status, out, err = run(cfgs, root, smbus_factory=bus.factory())
    assert status == 1
    assert err == (
        f"picluster-agent failsafe: fan[0] sysfs-pwm: pwmchip '1f00098000.pwm' ({root}/sys/class/pwm/pwmchip0): "
        "pwm1/duty_cycle not writable: Is a directory - NOT at full\n"
    )
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"
    assert player.receive(1) == [proto.SetFanPercent(100)]
    assert bus.regs[0x30] == 0xFF
    assert "fan[3] rack: rack: full" in out


def test_failure_after_open_is_reported(root: Path) -> None:
    bus = emc_bus()
    bus.fail_writes = True  # the chip answers reads but every write fails
    status, _, err = run([FanConfig(backend="emc2301"), FanConfig(backend="pwmfan")], root, smbus_factory=bus.factory())
    assert status == 1
    assert "fan[0] emc2301: EMC2301 (/dev/i2c-1 0x2f): register 0x32 write failed: Input/output error" in err
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"


def test_auto_and_missing_devices(root: Path, tmp_path: Path) -> None:
    status, out, _ = run([FanConfig(uart_device=str(tmp_path / "no-tty"))], root)
    assert status == 0 and text(root, f"{HWMON_FAN}/pwm1") == "255"  # auto found the fan connector
    assert "fan[0] auto: hwmon 'pwmfan': full" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    status, out, _ = run([FanConfig(uart_device=str(tmp_path / "no-tty"))], empty)
    assert status == 0 and "auto found no fan on this node" in out  # nothing to cool is not a failure
    status, _, err = run([FanConfig(backend="pwmfan")], empty)
    assert status == 1 and "hwmon 'pwmfan': not found" in err
    assert fs.failsafe([], SysfsRoot(empty)) == 0


def write_config(path: Path, body: str) -> str:
    path.write_text(body)
    return str(path)


def test_main_from_toml(root: Path, tmp_path: Path, player: FanUnitPlayer, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "fans.toml",
        f"""
[agent]
node_id = "blade3"   # other sections of the file are not the fail-safe's business

[[fan]]
backend = "pwmfan"

[[fan]]
backend = "sysfs-pwm"
pwm_chip = "1f00098000.pwm"
channel = 1

[[fan]]
backend = "smart-unit"
uart_device = "{player.path}"
""",
    )
    assert fs.main_failsafe(["--root", str(root), config]) == 0
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"
    assert text(root, f"{PWM0}/pwm1/duty_cycle") == "40000"
    assert player.receive(1) == [proto.SetFanPercent(100)]
    assert capsys.readouterr().err == ""


def test_main_bad_table_reported_good_ones_full(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "fans.toml",
        """
[[fan]]
backend = "pwmfan"

[[fan]]
backend = "sysfs-pwm"
min_duty_pct = 120

[[fan]]
backend = "sysfs-pwn"

[[fan]]
backend = "sysfs-pwm"
chanel = 1
""",
    )
    assert fs.main_failsafe(["--root", str(root), config]) == 1
    err = capsys.readouterr().err
    assert f"{config}: fan[1].min_duty_pct: expected a number from 0 to 100, got 120" in err
    assert f'{config}: fan[2].backend: expected one of "none", "auto"' in err
    assert f'{config}: fan[3].chanel: unknown key (did you mean "channel"?)' in err
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"


def test_main_unreadable_config_still_tries_auto(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.toml")
    assert fs.main_failsafe(["--root", str(root), missing]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the configuration (No such file or directory); trying backend auto" in err
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"
    garbled = write_config(tmp_path / "bad.toml", "[[fan]\nbackend = 'pwmfan'\n")
    assert fs.main_failsafe(["--root", str(root), garbled]) == 1
    assert "cannot read the configuration" in capsys.readouterr().err


def test_main_without_fan_tables_uses_auto(root: Path, tmp_path: Path) -> None:
    assert fs.load_fan_configs(write_config(tmp_path / "a.toml", "[agent]\n")) == ([FanConfig()], [])
    single = write_config(tmp_path / "b.toml", "[fan]\nbackend = 'pwmfan'\n")
    assert fs.load_fan_configs(single) == ([FanConfig(backend="pwmfan")], [])


def test_main_config_as_option(root: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.toml", "[policy.fan]\nmin_duty_pct = 20\n\n[[fan]]\nbackend = 'pwmfan'\n")
    assert fs.main_failsafe(["--config", config, "--root", str(root)]) == 0
    assert text(root, f"{HWMON_FAN}/pwm1") == "255"


def test_main_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert fs.main_failsafe(["--bogus"]) == 2
    assert "picluster-agent failsafe" in capsys.readouterr().err
    assert fs.main_failsafe(["a.toml", "--config", "b.toml"]) == 2
    assert "two configuration files given" in capsys.readouterr().err
