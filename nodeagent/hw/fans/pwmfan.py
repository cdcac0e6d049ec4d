"""The Pi 5 / CM5 fan connector, through the kernel's ``pwm-fan`` driver (hwmon ``name`` = ``pwmfan``).

The hwmon device is found by name (its number changes from boot to boot). ``pwm1`` takes 0–255, ``fan1_input``
is the tachometer in RPM (present when the device tree gives the fan a tach line, as the Pi 5 and CM5 do).

``pwm1_enable`` in this driver is *not* the usual hwmon manual/automatic switch: it says what ``pwm1 = 0`` means
(0: PWM and fan supply off; 1: PWM off, supply on; 2: PWM and supply on; 3: both off), per the kernel's
Documentation/hwmon/pwm-fan.rst. Writing 1 (the driver's usual mode) makes sure a non-zero ``pwm1`` drives the
PWM; ``close()`` puts back whatever value was there. The kernel's thermal governor still owns the cooling device:
it sets its own level again the next time the SoC crosses a trip point (50/60/67.5/75 °C by default), so the
agent's duty holds between trip crossings. **UNCONFIRMED** on Raspberry Pi kernels; seen in mainline pwm-fan.c.
"""

from __future__ import annotations

import logging

from nodeagent.errors import HardwareError
from nodeagent.hw.fans.base import Fan, SysfsAttrs
from nodeagent.hw.root import SysfsRoot

log = logging.getLogger(__name__)

PWM_MAX = 255
ENABLE_PWM = 1  # pwm-fan: PWM on for any non-zero pwm1


class PwmFan(Fan):
    """The fan on the Pi 5 / CM5 4-pin connector, via hwmon ``hwmon_name`` under ``root``.

    Raises ``HardwareError`` when no such hwmon device exists (the fan connector is enabled by the firmware when
    it sees the tach spin, or by ``dtparam=cooling_fan`` in config.txt).
    """

    def __init__(self, root: SysfsRoot, *, hwmon_name: str = "pwmfan", min_duty_pct: float = 0.0) -> None:
        found = root.find_hwmon(hwmon_name)
        if found is None:
            raise HardwareError(
                f"hwmon {hwmon_name!r}: not found under {root.path('sys/class/hwmon')} "
                "(no fan on the fan connector? dtparam=cooling_fan in config.txt enables it)"
            )
        super().__init__(f"hwmon {hwmon_name!r}", min_duty_pct=min_duty_pct)
        self.dev = SysfsAttrs(f"hwmon {hwmon_name!r}", found)
        self._has_tach = self.dev.has("fan1_input")
        self._enable_before: int | None = None
        if self.dev.has("pwm1_enable"):
            before = self._read_or_none("pwm1_enable")
            if before != ENABLE_PWM:
                self.dev.write("pwm1_enable", ENABLE_PWM)
                self._enable_before = before  # None (unreadable) means there is nothing to restore
        pwm = self._read_or_none("pwm1")
        self._duty_pct = None if pwm is None else pwm * 100.0 / PWM_MAX

    def _read_or_none(self, rel: str) -> int | None:
        # Opening must not fail on a read: the writes are what keep the node cool, and they may still work.
        try:
            return self.dev.read_int(rel)
        except HardwareError as e:
            log.warning("fan pwmfan: attribute unreadable fan=%r error=%r", self.name, str(e))
            return None

    def _apply_duty(self, pct: float) -> None:
        self.dev.write("pwm1", round(pct * PWM_MAX / 100.0))

    def _apply_full(self) -> None:
        # Both writes, every time: a stop path cannot know what changed pwm1_enable since start-up.
        if self.dev.has("pwm1_enable"):
            self.dev.write("pwm1_enable", ENABLE_PWM)
        self.dev.write("pwm1", PWM_MAX)

    def read_rpm(self) -> int | None:
        """``fan1_input`` in RPM (the driver counts tach pulses over one second); None without a tach line."""
        return self.dev.read_int("fan1_input") if self._has_tach else None

    def close(self) -> None:
        """Put ``pwm1_enable`` back as it was; the duty stays until the thermal governor next changes level."""
        if self._enable_before is None:
            return
        try:
            self.dev.write("pwm1_enable", self._enable_before)
        except HardwareError as e:
            log.warning("fan close: could not restore pwm1_enable fan=%r error=%r", self.name, str(e))
        self._enable_before = None
