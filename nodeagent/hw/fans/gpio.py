"""A fan switched by a GPIO with gpiozero's PWM, and a tachometer counted on a GPIO.

The NanoCluster's slot 1 drives the chassis fan from GPIO13 through an on-board MOSFET; Sipeed's recipe uses 50 Hz
(duty 0 = off, 100 = full, so active-high for the stock 2-pin fan). On a Pi 5 / CM5 gpiozero's only working pin
factory is lgpio, whose PWM is software-timed in the calling process: it stops when the process exits, and what
the pin does after that is up to the kernel (**UNCONFIRMED** for RP1). A fan that must stay on after the agent has
gone belongs on the kernel's hardware PWM (``sysfs-pwm``), which keeps running.

Works with Debian 12's gpiozero 1.6.2 and with gpiozero 2.x (the device API used here is the same in both).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any

from nodeagent.errors import HardwareError
from nodeagent.hw.fans.base import TachFan

log = logging.getLogger(__name__)

MAX_EDGES = 4096  # at 10000 RPM and 2 pulses/rev a 1 s window holds ~333 edges; this bounds memory either way


def import_gpiozero() -> ModuleType:
    """The gpiozero module, or ``HardwareError`` saying how to install it."""
    try:
        import gpiozero
    except ImportError as e:
        raise HardwareError(f"gpiozero is not importable ({e}); install it: apt install python3-gpiozero") from e
    return gpiozero


def _is_fallback_mock(device: Any, requested_factory: Any) -> bool:
    """Whether gpiozero quietly chose its mock factory on a machine without GPIO (2.x does, with a warning)."""
    if requested_factory is not None or os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() == "mock":
        return False
    return type(device.pin_factory).__name__ == "MockFactory"


class TachCounter:
    """RPM from a fan's open-collector tach line on GPIO ``pin`` (BCM), with the internal pull-up.

    The tach pulls the line low ``pulses_per_rev`` times per revolution. Each falling edge (gpiozero's
    *activated*: with a pull-up, low is active) is timestamped with ``clock``; the RPM is taken from the spacing
    of the edges seen in the last ``window_s`` seconds, so it does not depend on when it is read. Fewer than two
    edges in the window reads as 0 RPM (stopped, or slower than one pulse per window).
    """

    def __init__(
        self,
        pin: int,
        *,
        pulses_per_rev: int = 2,
        window_s: float = 1.0,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        gpiozero = import_gpiozero()
        self.pin_number = pin
        self.pulses_per_rev = pulses_per_rev
        self.window_s = window_s
        self._clock = clock
        self._edges: deque[float] = deque(maxlen=MAX_EDGES)
        self._lock = threading.Lock()  # real pin factories call back from their own thread
        self.pulses = 0
        try:
            self._input = gpiozero.DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
        except Exception as e:  # gpiozero's errors differ between 1.6 and 2.x; all mean "cannot use the pin"
            raise HardwareError(f"fan tach (GPIO{pin}): cannot read the pin: {e}") from e
        self._input.when_activated = self._edge

    def _edge(self) -> None:
        with self._lock:
            self._edges.append(self._clock())
            self.pulses += 1

    def read_rpm(self) -> int:
        """Revolutions per minute over the last ``window_s`` seconds."""
        now = self._clock()
        with self._lock:
            while self._edges and self._edges[0] < now - self.window_s:
                self._edges.popleft()
            count = len(self._edges)
            span = self._edges[-1] - self._edges[0] if count >= 2 else 0.0
        if span <= 0.0:
            return 0
        return round((count - 1) / span * 60.0 / self.pulses_per_rev)

    def close(self) -> None:
        """Release the tach pin."""
        self._input.close()


class GpioFan(TachFan):
    """A fan switched by GPIO ``pin`` (BCM) at ``frequency_hz`` with gpiozero's ``PWMOutputDevice``.

    ``active_high=False`` for a fan that runs when the pin is low. The pin starts at 100 % (safe until the
    policy's first duty). ``tach_pin`` adds a ``TachCounter``; without one ``read_rpm()`` is None.
    ``pin_factory`` is a gpiozero pin factory (tests: ``MockFactory(pin_class=MockPWMPin)``).
    """

    def __init__(
        self,
        pin: int = 13,
        *,
        frequency_hz: float = 50.0,
        active_high: bool = True,
        min_duty_pct: float = 0.0,
        tach_pin: int | None = None,
        pulses_per_rev: int = 2,
        tach_window_s: float = 1.0,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"gpio GPIO{pin}", min_duty_pct=min_duty_pct)
        gpiozero = import_gpiozero()
        try:
            self._pwm = gpiozero.PWMOutputDevice(
                pin, active_high=active_high, initial_value=1.0, frequency=frequency_hz, pin_factory=pin_factory
            )
        except Exception as e:
            raise HardwareError(f"{self.name}: cannot drive the pin at {frequency_hz} Hz: {e}") from e
        if _is_fallback_mock(self._pwm, pin_factory):
            self._pwm.close()
            raise HardwareError(f"{self.name}: no GPIO on this machine (gpiozero fell back to its mock pins)")
        self._duty_pct = 100.0
        self.tach: TachCounter | None = None
        if tach_pin is not None:
            try:
                self.tach = TachCounter(
                    tach_pin,
                    pulses_per_rev=pulses_per_rev,
                    window_s=tach_window_s,
                    pin_factory=pin_factory,
                    clock=clock,
                )
            except HardwareError:
                self._pwm.close()
                raise

    def _apply_duty(self, pct: float) -> None:
        try:
            self._pwm.value = pct / 100.0
        except Exception as e:
            raise HardwareError(f"{self.name}: cannot set the duty to {pct:g} %: {e}") from e

    def close(self) -> None:
        """Release the pins (gpiozero sets them back to inputs; the fan's own pull decides what it does then)."""
        super().close()
        self._pwm.close()
