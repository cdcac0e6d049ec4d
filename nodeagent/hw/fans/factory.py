"""``make_fan``: the fan a ``FanConfig`` names, opened (``auto`` detects the smart unit or the pwmfan hwmon).

The backends import only ``fans.base``; this module imports them all. Their optional libraries (gpiozero,
smbus2) are imported when a fan of theirs is opened, so a node without them can still use the other backends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from nodeagent.errors import HardwareError
from nodeagent.hw.fans.base import Fan, FanConfig
from nodeagent.hw.fans.emc import Emc2101Fan, Emc2301Fan
from nodeagent.hw.fans.gpio import GpioFan, TachCounter
from nodeagent.hw.fans.pwmfan import PwmFan
from nodeagent.hw.fans.smartunit import SmartFanUnit
from nodeagent.hw.fans.sysfs_pwm import SysfsPwmFan
from nodeagent.hw.root import SysfsRoot

log = logging.getLogger("nodeagent.hw.fan")

SerialOpener = Callable[[str, int], int]
SmbusFactory = Callable[[int], Any]


def make_fan(
    cfg: FanConfig,
    root: SysfsRoot,
    *,
    pin_factory: Any = None,
    serial_opener: SerialOpener | None = None,
    smbus_factory: SmbusFactory | None = None,
) -> Fan | None:
    """The fan ``cfg`` describes, opened; None for ``backend = "none"`` or when ``auto`` finds nothing.

    ``root`` is where sysfs is (``/`` on a node, a recorded tree in tests). ``pin_factory`` is a gpiozero pin
    factory (None: gpiozero's default), ``serial_opener(path, baud) -> fd`` opens the smart unit's UART, and
    ``smbus_factory(bus)`` returns an smbus2-like bus. Raises ``HardwareError`` when the device is not there.
    """
    fan = _open(cfg, root, pin_factory, serial_opener, smbus_factory)
    if fan is not None and cfg.name:
        fan.name = cfg.name
    return fan


def _open(
    cfg: FanConfig,
    root: SysfsRoot,
    pin_factory: Any,
    serial_opener: SerialOpener | None,
    smbus_factory: SmbusFactory | None,
) -> Fan | None:
    if cfg.backend == "none":
        return None
    if cfg.backend == "auto":
        return _auto(cfg, root, serial_opener)
    if cfg.backend == "pwmfan":
        return PwmFan(root, hwmon_name=cfg.hwmon_name, min_duty_pct=cfg.min_duty_pct)
    if cfg.backend == "sysfs-pwm":
        tach = _tach(cfg, pin_factory) if cfg.tach_pin is not None else None
        try:
            return SysfsPwmFan(
                root,
                chip=cfg.pwm_chip,
                channel=cfg.channel,
                frequency_hz=cfg.pwm_frequency_hz,
                inverted=cfg.inverted,
                min_duty_pct=cfg.min_duty_pct,
                export_timeout_s=cfg.export_timeout_s,
                tach=tach,
            )
        except BaseException:
            if tach is not None:
                tach.close()  # give the tach pin back, or the next attempt finds it reserved
            raise
    if cfg.backend == "gpio":
        return GpioFan(
            cfg.gpio_pin,
            frequency_hz=cfg.pwm_frequency_hz,
            active_high=not cfg.inverted,
            min_duty_pct=cfg.min_duty_pct,
            tach_pin=cfg.tach_pin,
            pulses_per_rev=cfg.pulses_per_rev,
            tach_window_s=cfg.tach_window_s,
            pin_factory=pin_factory,
        )
    if cfg.backend == "smart-unit":
        return SmartFanUnit(cfg.uart_device, baud=cfg.uart_baud, opener=serial_opener, min_duty_pct=cfg.min_duty_pct)
    cls = Emc2301Fan if cfg.backend == "emc2301" else Emc2101Fan
    return cls(
        bus=cfg.i2c_bus,
        address=cfg.i2c_address,
        smbus_factory=smbus_factory,
        min_duty_pct=cfg.min_duty_pct,
        inverted=cfg.inverted,
    )


def _tach(cfg: FanConfig, pin_factory: Any) -> Any:
    assert cfg.tach_pin is not None
    return TachCounter(
        cfg.tach_pin, pulses_per_rev=cfg.pulses_per_rev, window_s=cfg.tach_window_s, pin_factory=pin_factory
    )


def _auto(cfg: FanConfig, root: SysfsRoot, serial_opener: SerialOpener | None) -> Fan | None:
    """The smart fan unit if its UART exists and it speaks within ``detect_timeout_s``, else the ``pwmfan`` hwmon.

    GPIO, hardware-PWM and I2C fans cannot be detected safely (driving an unknown pin is not harmless), so they
    are never chosen by ``auto``: name them in the configuration.
    """
    started = time.monotonic()
    if os.path.exists(cfg.uart_device):
        try:
            unit = SmartFanUnit(cfg.uart_device, baud=cfg.uart_baud, opener=serial_opener)
        except HardwareError as e:
            log.warning("fan auto: smart fan unit not usable device=%s error=%r", cfg.uart_device, str(e))
        else:
            try:
                heard = unit.detect(cfg.detect_timeout_s)
            except HardwareError as e:
                log.warning("fan auto: smart fan unit unreadable device=%s error=%r", cfg.uart_device, str(e))
                heard = False
            if heard:
                log.info("fan auto: smart fan unit found device=%s", cfg.uart_device)
                unit.min_duty_pct = cfg.min_duty_pct
                return unit
            unit.close()
            log.warning(
                "fan auto: %s exists but no smart fan unit spoke within %.1f s; trying the pwmfan hwmon",
                cfg.uart_device,
                time.monotonic() - started,
            )
    if root.find_hwmon(cfg.hwmon_name) is not None:
        log.info("fan auto: using hwmon %r", cfg.hwmon_name)
        return PwmFan(root, hwmon_name=cfg.hwmon_name, min_duty_pct=cfg.min_duty_pct)
    log.warning(
        "fan auto: no fan found (no smart unit on %s, no hwmon %r under %s); set [[fan]] backend to name one",
        cfg.uart_device,
        cfg.hwmon_name,
        root.root,
    )
    return None
