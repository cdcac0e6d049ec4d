"""The NanoCluster's slot power lines: slot 1 switches slots 1-7 through an I2C GPIO expander.

Line 0 resets the Ethernet switch chip, line N belongs to slot N; every line is active low and idles high.
For a CM5 in a slot the line acts like its power button: a short pulse switches an off module on (or asks a
running one to shut down cleanly), a long hold forces it off. The expander's part number and its gpiochip
number are UNCONFIRMED (nanoctl uses ``gpiochip14`` with a CM5 in slot 1), so ``chip = "auto"`` looks for the one
gpiochip that belongs to an I2C device, and ``chip`` and every timing can be set in ``[slot_power]``.
Lines are driven through gpiozero (lgpio on a Pi; tests use gpiozero's MockFactory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw.root import SysfsRoot

log = logging.getLogger(__name__)

GPIO_DEVICES = "sys/bus/gpio/devices"
SWITCH_LINE = 0  # the Ethernet switch chip's reset


@dataclass(frozen=True)
class SlotPowerConfig:
    """[slot_power]: the slot power lines on a NanoCluster's slot 1."""

    enabled: Literal["auto", "on", "off"] = "auto"  # auto: a NanoCluster node in slot 1
    chip: str = "auto"  # "gpiochip14", "14", or auto: the one gpiochip of an I2C device
    chip_names: tuple[str, ...] = ()  # auto: only I2C devices with one of these names (e.g. "pca9535")
    on_pulse_s: float = 1.0  # "on": a short press
    off_pulse_s: float = 1.0  # "off": a short press, a running CM5 shuts down cleanly
    force_off_s: float = 8.0  # "force-off" and the first half of "cycle": a long hold
    cycle_gap_s: float = 5.0  # "cycle": off this long before the "on" pulse

    def __post_init__(self) -> None:
        for name in ("on_pulse_s", "off_pulse_s", "force_off_s", "cycle_gap_s"):
            value = getattr(self, name)
            if not 0.0 < value <= 60.0:
                raise ConfigError(f"slot_power.{name}: expected seconds above 0 and at most 60, got {value!r}")


def find_chip(root: SysfsRoot, cfg: SlotPowerConfig) -> int:
    """The gpiochip number of the expander: ``cfg.chip``, or the only gpiochip that hangs off an I2C bus."""
    if cfg.chip != "auto":
        text = cfg.chip.removeprefix("gpiochip")
        if not text.isdigit():
            raise HardwareError(f'slot_power.chip: expected "auto", "gpiochipN" or N, got {cfg.chip!r}')
        return int(text)
    found = []
    for link in root.glob(f"{GPIO_DEVICES}/gpiochip*"):
        device = link.resolve().parent
        if "/i2c-" not in str(device):
            continue
        try:
            name = (device / "name").read_text().strip()
        except OSError:
            name = "?"
        if not cfg.chip_names or name in cfg.chip_names:
            found.append((int(link.name.removeprefix("gpiochip")), name, device.name))
    if len(found) != 1:
        seen = ", ".join(f"gpiochip{n} ({name} at {addr})" for n, name, addr in found) or "none"
        raise HardwareError(
            f"slot power: expected one I2C GPIO expander under /{GPIO_DEVICES}, found {seen}; "
            'set slot_power.chip = "gpiochipN" (gpiodetect lists them)'
        )
    return found[0][0]


def pin_factory(chip: int) -> Any:
    """gpiozero's lgpio factory on ``chip``; a clear error where lgpio is missing."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory
    except ImportError as e:
        raise HardwareError(f"slot power: {e}; install python3-lgpio (Raspberry Pi OS)") from None
    try:
        return LGPIOFactory(chip=chip)
    except Exception as e:  # lgpio raises its own error type for a missing or busy chip
        raise HardwareError(f"slot power: cannot open gpiochip{chip}: {e}") from None


class SlotLines:
    """Drive the lines: ``act(action, slot)`` blocks for the pulse (seconds), so call it off the agent's loop."""

    def __init__(self, cfg: SlotPowerConfig, factory: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.factory = factory
        self.sleep = sleep
        self._lines: dict[int, Any] = {}

    def _line(self, n: int) -> Any:
        if n not in self._lines:
            import gpiozero

            # Active low, idle (inactive = high) from the moment it is claimed.
            self._lines[n] = gpiozero.DigitalOutputDevice(
                n, active_high=False, initial_value=False, pin_factory=self.factory
            )
        return self._lines[n]

    def pulse(self, n: int, seconds: float) -> None:
        line = self._line(n)
        line.on()
        try:
            self.sleep(seconds)
        finally:
            line.off()

    def act(self, action: str, slot: int) -> None:
        """``on``, ``off``, ``force-off`` or ``cycle`` the module in ``slot`` (1-7)."""
        if not 1 <= slot <= 7:
            raise ValueError(f"slot: expected 1-7, got {slot!r}")
        cfg = self.cfg
        if action == "on":
            self.pulse(slot, cfg.on_pulse_s)
        elif action == "off":
            self.pulse(slot, cfg.off_pulse_s)
        elif action == "force-off":
            self.pulse(slot, cfg.force_off_s)
        elif action == "cycle":
            self.pulse(slot, cfg.force_off_s)
            self.sleep(cfg.cycle_gap_s)
            self.pulse(slot, cfg.on_pulse_s)
        else:
            raise ValueError(f"action: expected on, off, force-off or cycle, got {action!r}")
        log.info("event=slot_power action=%s slot=%d", action, slot)

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
        self._lines.clear()
