"""One interface for every fan a CM5 node can drive, and the configuration that picks one.

The backends live one module each beside this one (the gpiozero pattern: a small interface, interchangeable
implementations), and ``factory.make_fan`` opens the one a ``FanConfig`` names:

- ``pwmfan`` (``fans/pwmfan.py``): the Pi 5 / CM5 fan connector, through the kernel's ``pwmfan`` hwmon device.
- ``sysfs-pwm`` (``fans/sysfs_pwm.py``): kernel hardware PWM, ``/sys/class/pwm/pwmchipN``; the Compute Blade's
  standard fan unit is GPIO12 at 25 kHz with its tach on GPIO13.
- ``gpio`` (``fans/gpio.py``): a gpiozero ``PWMOutputDevice``; the NanoCluster's slot 1 drives GPIO13 at 50 Hz.
- ``smart-unit`` (``fans/smartunit.py``): the Compute Blade smart fan unit over its UART (``/dev/ttyAMA4`` on a CM5).
- ``emc2301`` / ``emc2101`` (``fans/emc.py``): an I2C fan controller (addresses 0x2F / 0x4C).
- ``auto``: the smart unit if it answers, else the ``pwmfan`` hwmon, else no fan (logged as a warning).
- ``none``: no fan; ``make_fan`` returns None.
- the simulator's fan (``fans/sim.py``), for ``--sim`` nodes.

Every fan takes a duty from 0 to 100 %, reads its speed where it has a tachometer, and has ``full()``, the
fail-safe: 100 % by the most direct path, never raising. Hardware errors name the device and its path:
``hwmon 'pwmfan' (/sys/class/hwmon/hwmon2): pwm1 not writable: Permission denied``.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw.root import read_text_file

log = logging.getLogger("nodeagent.hw.fan")

FanBackend = Literal["none", "auto", "pwmfan", "sysfs-pwm", "gpio", "smart-unit", "emc2301", "emc2101"]
FAN_BACKENDS: tuple[str, ...] = ("none", "auto", "pwmfan", "sysfs-pwm", "gpio", "smart-unit", "emc2301", "emc2101")

RP1_PWM0 = "1f00098000.pwm"  # RP1's PWM0 block: channel 0 is GPIO12, channel 1 is GPIO13
SYSFS_PWM_DEFAULT_HZ = 25_000.0  # what a 4-pin PC fan expects (Intel spec); the Compute Blade HAL uses it
GPIO_DEFAULT_HZ = 50.0  # Sipeed's NanoCluster recipe; lgpio's software PWM is no 25 kHz source (10 kHz cap?)
UART_BAUDS: tuple[int, ...] = (9600, 19200, 38400, 57600, 115200, 230400)


@dataclass(frozen=True)
class FanConfig:
    """Which fan this node drives and how; one ``[[fan]]`` table in the configuration.

    Only the keys of the chosen ``backend`` matter; the others keep their defaults. Typical tables::

        [[fan]]                       # Pi 5 / CM5 fan connector
        backend = "pwmfan"

        [[fan]]                       # Compute Blade, standard fan unit (hardware PWM overlay on GPIO12)
        backend = "sysfs-pwm"
        channel = 0
        tach_pin = 13

        [[fan]]                       # Compute Blade CM5, smart fan unit
        backend = "smart-unit"

        [[fan]]                       # NanoCluster slot 1, chassis fan
        backend = "gpio"
        gpio_pin = 13

    ``PRESETS`` holds these as objects.
    """

    backend: FanBackend = "auto"
    name: str = ""  # label in logs and telemetry; empty: derived from the backend and device
    min_duty_pct: float = 0.0  # a duty above 0 but below this is raised to it: many fans stall under ~20 %
    inverted: bool = False  # the fan runs at full when the signal is low (4-pin fan on the NanoCluster's MOSFET)
    # pwmfan
    hwmon_name: str = "pwmfan"
    # sysfs-pwm
    pwm_chip: str | int = RP1_PWM0  # the chip's device name ("1f00098000.pwm"), DT node name, or its number
    channel: int = 0  # PWM channel on that chip (RP1 PWM0: 0 = GPIO12, 1 = GPIO13)
    frequency_hz: float | None = None  # None: 25000 for sysfs-pwm, 50 for gpio
    export_timeout_s: float = 2.0  # how long to wait for pwmN/ to appear after exporting it
    # gpio (BCM numbers)
    gpio_pin: int = 13
    # tachometer on a GPIO, for the gpio and sysfs-pwm backends
    tach_pin: int | None = None
    pulses_per_rev: int = 2  # PC fans give 2 tach pulses per revolution
    tach_window_s: float = 1.0  # RPM is measured over the pulses of the last window
    # smart-unit
    uart_device: str = "/dev/ttyAMA4"  # CM5 on a Compute Blade; a CM4 uses /dev/ttyAMA5
    uart_baud: int = 115200
    detect_timeout_s: float = 3.0  # auto: listen this long for the unit (it reports every 2 s)
    # emc2301 / emc2101
    i2c_bus: int = 1
    i2c_address: int | None = None  # None: 0x2F (EMC2301) or 0x4C (EMC2101)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:  # the first is enough to fix; the next run names the next
            key, problem = problems[0]
            raise ConfigError(f"fan.{key}: {problem}")

    @property
    def pwm_frequency_hz(self) -> float:
        """The PWM frequency this fan uses: ``frequency_hz``, or the backend's default."""
        if self.frequency_hz is not None:
            return self.frequency_hz
        return GPIO_DEFAULT_HZ if self.backend == "gpio" else SYSFS_PWM_DEFAULT_HZ


def _problems(cfg: FanConfig) -> list[tuple[str, str]]:
    """(key, "expected …, got …") for each out-of-range value, in field order."""
    checks: list[tuple[str, bool, str]] = [
        ("backend", cfg.backend in FAN_BACKENDS, "one of " + ", ".join(FAN_BACKENDS)),
        ("min_duty_pct", 0.0 <= cfg.min_duty_pct <= 100.0, "a number from 0 to 100"),
        ("pwm_chip", cfg.pwm_chip != "" and not (isinstance(cfg.pwm_chip, int) and cfg.pwm_chip < 0), "a chip"),
        ("channel", cfg.channel >= 0, "a whole number from 0"),
        ("frequency_hz", cfg.frequency_hz is None or 1.0 <= cfg.frequency_hz <= 1e6, "1 to 1000000 Hz"),
        ("export_timeout_s", cfg.export_timeout_s >= 0, "a number from 0"),
        ("gpio_pin", 0 <= cfg.gpio_pin <= 53, "a BCM GPIO number from 0 to 53"),
        ("tach_pin", cfg.tach_pin is None or 0 <= cfg.tach_pin <= 53, "a BCM GPIO number from 0 to 53"),
        ("pulses_per_rev", cfg.pulses_per_rev >= 1, "a whole number from 1"),
        ("tach_window_s", cfg.tach_window_s > 0, "a number above 0"),
        ("uart_baud", cfg.uart_baud in UART_BAUDS, "one of " + ", ".join(map(str, UART_BAUDS))),
        ("detect_timeout_s", cfg.detect_timeout_s >= 0, "a number from 0"),
        ("i2c_bus", cfg.i2c_bus >= 0, "a whole number from 0"),
        ("i2c_address", cfg.i2c_address is None or 0x03 <= cfg.i2c_address <= 0x77, "an address from 0x03 to 0x77"),
    ]
    out = [(key, f"expected {expected}, got {getattr(cfg, key)!r}") for key, ok, expected in checks if not ok]
    if cfg.backend == "gpio" and cfg.tach_pin is not None and cfg.tach_pin == cfg.gpio_pin:
        out.append(("tach_pin", f"expected a pin other than gpio_pin ({cfg.gpio_pin}), got {cfg.tach_pin}"))
    return out


PRESETS: dict[str, FanConfig] = {
    "pi5-fan-connector": FanConfig(backend="pwmfan"),
    "compute-blade-standard": FanConfig(backend="sysfs-pwm", channel=0, frequency_hz=25_000.0, tach_pin=13),
    "compute-blade-smart": FanConfig(backend="smart-unit", uart_device="/dev/ttyAMA4"),
    "compute-blade-smart-cm4": FanConfig(backend="smart-unit", uart_device="/dev/ttyAMA5"),
    "nanocluster-slot1": FanConfig(backend="gpio", gpio_pin=13, frequency_hz=50.0),
}


def clamp_duty(pct: float, min_duty_pct: float = 0.0) -> float:
    """``pct`` limited to 0–100 %, a non-zero value raised to ``min_duty_pct``; NaN means full (fail safe)."""
    if math.isnan(pct):
        return 100.0
    if pct <= 0.0:
        return 0.0
    return min(max(pct, min_duty_pct), 100.0)


class Fan(ABC):
    """A fan this node can drive. gpiozero-style: ``close()`` and a context manager.

    Subclasses must override ``_apply_duty()`` and ``read_rpm()``; they may override ``_apply_full()`` (when
    full has a more direct path than duty 100) and ``close()`` (to hand control back to the kernel).
    """

    def __init__(self, name: str, *, min_duty_pct: float = 0.0) -> None:
        self.name = name
        self.min_duty_pct = min_duty_pct
        self._duty_pct: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} duty_pct={self._duty_pct}>"

    @property
    def duty_pct(self) -> float | None:
        """The duty last commanded, in % (what the device said when opened, before that; None if unknown)."""
        return self._duty_pct

    def set_duty(self, pct: float) -> None:
        """Drive the fan at ``pct`` % (clamped to 0–100; NaN is taken as 100). Raises ``HardwareError``."""
        duty = clamp_duty(pct, self.min_duty_pct)
        self._apply_duty(duty)
        self._duty_pct = duty

    @abstractmethod
    def _apply_duty(self, pct: float) -> None:
        """Send ``pct`` (already clamped) to the device; raise ``HardwareError`` naming device and path."""

    @abstractmethod
    def read_rpm(self) -> int | None:
        """Fan speed in RPM, or None where there is no tachometer. Raises ``HardwareError`` when unreadable."""

    def force_full(self) -> None:
        """Full speed by the most direct path; raises ``HardwareError``. ``full()`` is the never-raising form."""
        self._apply_full()
        self._duty_pct = 100.0

    def _apply_full(self) -> None:
        self._apply_duty(100.0)

    def full(self) -> None:
        """Fail-safe: 100 %. Never raises; a failure is logged as an error naming the device."""
        try:
            self.force_full()
        except Exception as e:  # the fail-safe must not take its caller down; the log says what happened
            log.error("fan full failed fan=%r error=%r", self.name, str(e))

    def close(self) -> None:  # noqa: B027 - optional hook; most fans have nothing to hand back
        """Hand the fan back to whoever had it before (the kernel), where that exists."""

    def __enter__(self) -> Fan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tach(Protocol):
    """A tachometer beside a PWM fan (``fans.gpio.TachCounter``)."""

    def read_rpm(self) -> int: ...

    def close(self) -> None: ...


class TachFan(Fan):
    """A fan whose speed comes from an optional tachometer on a GPIO (``tach``), not from the fan's driver."""

    tach: Tach | None = None

    def read_rpm(self) -> int | None:
        """RPM from the tachometer, or None without one."""
        return self.tach.read_rpm() if self.tach is not None else None

    def close(self) -> None:
        """Release the tachometer; subclasses release their PWM after calling this."""
        if self.tach is not None:
            self.tach.close()
            self.tach = None


class SysfsAttrs:
    """Attribute files of one sysfs device directory; errors name the device, its directory and the file.

    Writes use one ``write()`` on a file opened without ``O_CREAT``: a missing attribute is an error, never a new
    file (which matters in recorded trees), and sysfs takes the value in a single store call.
    """

    def __init__(self, label: str, directory: Path) -> None:
        self.label = label
        self.dir = directory

    def __str__(self) -> str:
        return f"{self.label} ({self.dir})"

    def has(self, rel: str) -> bool:
        """Whether attribute ``rel`` exists."""
        return (self.dir / rel).exists()

    def read_text(self, rel: str) -> str:
        """Stripped contents of ``rel``; ``HardwareError`` naming the device when unreadable."""
        try:
            return read_text_file(self.dir / rel)
        except HardwareError as e:
            raise HardwareError(f"{self}: {rel} unreadable: {_cause(e)}") from e

    def read_int(self, rel: str) -> int:
        """The decimal integer in ``rel``; ``HardwareError`` naming the device when unreadable or not a number."""
        text = self.read_text(rel)
        try:
            return int(text)
        except ValueError:
            raise HardwareError(f"{self}: {rel}: expected a decimal integer, got {text[:40]!r}") from None

    def write(self, rel: str, value: int | str) -> None:
        """Store ``value`` in ``rel``; ``HardwareError`` naming the device and the cause when the kernel refuses."""
        data = str(value).encode()
        try:
            fd = os.open(self.dir / rel, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            raise HardwareError(f"{self}: {rel} not writable: {e.strerror or e}") from e


def _cause(e: HardwareError) -> str:
    # read_text_file says "<path>: <cause>"; the label already names the path, so keep only the cause.
    text = str(e)
    return text.rsplit(": ", 1)[-1] if ": " in text else text
