"""A fan on a kernel hardware PWM channel: ``/sys/class/pwm/pwmchipN/pwmM``.

On a CM5 the PWM block that reaches GPIO12/13 is RP1's PWM0, device ``1f00098000.pwm`` (channel 0 = GPIO12,
channel 1 = GPIO13), enabled by a PWM overlay in config.txt (e.g. ``dtoverlay=pwm-2chan,pin=12,func=4,pin2=13,
func2=4`` as NanoCtl uses; the exact overlay line for a CM5 is **UNCONFIRMED**). The chip is found by its device
name, never by number: pwmchip numbers depend on probe order.

Unlike a GPIO driven from user space, the kernel keeps a PWM channel running after the process that set it up has
exited, so this is the backend whose fail-safe outlives the agent. ``close()`` therefore changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from nodeagent.errors import HardwareError
from nodeagent.hw.fans.base import RP1_PWM0, SysfsAttrs, Tach, TachFan
from nodeagent.hw.root import SysfsRoot

log = logging.getLogger(__name__)

PWM_CLASS = "sys/class/pwm"
EXPORT_POLL_S = 0.01


def chip_names(chip_dir: Path) -> tuple[str, ...]:
    """The names a pwmchip answers to: its parent device's name (``1f00098000.pwm``) and DT node (``pwm@98000``)."""
    names = []
    device = chip_dir / "device"
    parent = device.resolve() if device.exists() else chip_dir.resolve().parent.parent
    names.append(parent.name)
    of_node = parent / "of_node"
    if of_node.exists():
        names.append(of_node.resolve().name)
    return tuple(names)


def find_pwmchip(root: SysfsRoot, chip: str | int) -> Path:
    """The ``sys/class/pwm/pwmchipN`` directory of ``chip``: a number, a device name or a device-tree node name."""
    if isinstance(chip, int) or chip.isdigit():
        path = root.path(f"{PWM_CLASS}/pwmchip{int(chip)}")
        if path.exists():
            return path
    else:
        for entry in root.glob(f"{PWM_CLASS}/pwmchip*"):
            if chip in chip_names(entry):
                return entry
    found = ", ".join(f"{e.name}={chip_names(e)[0]}" for e in root.glob(f"{PWM_CLASS}/pwmchip*")) or "none"
    raise HardwareError(
        f"pwm chip {chip!r}: not found under {root.path(PWM_CLASS)} (present: {found}); "
        "enable the PWM with a dtoverlay=pwm… line in config.txt"
    )


class SysfsPwmFan(TachFan):
    """A fan on channel ``channel`` of PWM chip ``chip`` at ``frequency_hz``; ``inverted`` for active-low fans.

    Opening exports the channel if needed, then sets period, polarity and enable. A channel that is already
    running keeps its duty; one that was not is started at 100 % until the first ``set_duty()``. ``tach`` is an
    optional tachometer (the Compute Blade's tach is GPIO13, read with gpiozero); without it ``read_rpm()`` is None.
    ``sleep`` and ``clock`` are injectable for the export wait.
    """

    def __init__(
        self,
        root: SysfsRoot,
        *,
        chip: str | int = RP1_PWM0,
        channel: int = 0,
        frequency_hz: float = 25_000.0,
        inverted: bool = False,
        min_duty_pct: float = 0.0,
        export_timeout_s: float = 2.0,
        tach: Tach | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if frequency_hz <= 0:
            raise ValueError(f"frequency_hz: expected a number above 0, got {frequency_hz!r}")
        chip_dir = find_pwmchip(root, chip)
        super().__init__(f"pwm {chip_names(chip_dir)[0]}/{channel}", min_duty_pct=min_duty_pct)
        self.chip = SysfsAttrs(f"pwmchip {chip!r}", chip_dir)
        npwm = self.chip.read_int("npwm")
        if not 0 <= channel < npwm:
            raise HardwareError(f"{self.chip}: channel {channel} does not exist (npwm = {npwm})")
        self.channel = channel
        self.inverted = inverted
        self.period_ns = max(round(1e9 / frequency_hz), 1)
        self.tach = tach
        self._ch = f"pwm{channel}"
        self._enabled = False
        self._export(export_timeout_s, sleep, clock)
        self._configure()

    def _export(self, timeout_s: float, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        """Export the channel unless it is already; then wait for the kernel (and udev) to create its files."""
        if self.chip.has(f"{self._ch}/period"):
            return
        try:
            self.chip.write("export", self.channel)
        except HardwareError as e:
            # EBUSY: a kernel driver holds the channel (RP1 PWM1 channel 3 is the fan connector's pwm-fan).
            raise HardwareError(f"{e} (channel {self.channel} in use by a kernel driver?)") from e
        deadline = clock() + timeout_s
        while not self.chip.has(f"{self._ch}/period"):
            if clock() >= deadline:
                raise HardwareError(f"{self.chip}: exported channel {self.channel}, but {self._ch}/ did not appear")
            sleep(EXPORT_POLL_S)

    def _configure(self) -> None:
        """Period, polarity and enable, in an order every PWM driver accepts (duty never above period)."""
        ch = self._ch
        # An unreadable attribute must not stop the writes that matter: it reads as "not set up", which starts
        # the fan at 100 %.
        old_period = self._int_or_zero(f"{ch}/period")
        old_duty = self._int_or_zero(f"{ch}/duty_cycle")
        self._enabled = self._int_or_zero(f"{ch}/enable") == 1
        want_polarity = "inversed" if self.inverted else "normal"
        polarity = self._read_or(f"{ch}/polarity", "normal")
        running = self._enabled and old_period > 0 and polarity == want_polarity
        pct = min(old_duty * 100.0 / old_period, 100.0) if running else 100.0
        duty = round(self.period_ns * pct / 100.0)
        if polarity != want_polarity and self._enabled:
            self.chip.write(f"{ch}/enable", 0)  # most drivers refuse a polarity change while running
            self._enabled = False
        if old_period != self.period_ns:
            if old_duty > self.period_ns:
                self.chip.write(f"{ch}/duty_cycle", duty)
            self.chip.write(f"{ch}/period", self.period_ns)
        if polarity != want_polarity:
            self.chip.write(f"{ch}/polarity", want_polarity)
        self.chip.write(f"{ch}/duty_cycle", duty)
        self._enable()
        self._duty_pct = pct

    def _read_or(self, rel: str, default: str) -> str:
        """``rel``'s contents, or ``default`` (with a warning) when it is missing or unreadable."""
        try:
            return self.chip.read_text(rel)
        except HardwareError as e:
            log.warning("fan pwm: attribute unreadable, assuming %r fan=%r error=%r", default, self.name, str(e))
            return default

    def _int_or_zero(self, rel: str) -> int:
        text = self._read_or(rel, "0")
        if text.isdigit():
            return int(text)
        log.warning("fan pwm: attribute not a number, assuming 0 fan=%r file=%s value=%r", self.name, rel, text[:40])
        return 0

    def _enable(self) -> None:
        self.chip.write(f"{self._ch}/enable", 1)
        self._enabled = True

    def _apply_duty(self, pct: float) -> None:
        self.chip.write(f"{self._ch}/duty_cycle", round(self.period_ns * pct / 100.0))
        if not self._enabled:
            self._enable()

    def _apply_full(self) -> None:
        # duty = period is 100 % whatever the polarity; enable is written every time in case someone cleared it.
        self.chip.write(f"{self._ch}/duty_cycle", self.period_ns)
        self._enable()

    # close(): TachFan's. The PWM channel keeps running at its last duty: the kernel holds it.
