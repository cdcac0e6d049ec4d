"""A stand-in for MicroPython's ``machine`` module, so the firmware's ``board`` runs under CPython.

It doubles the MicroPython API the board uses (``Pin``, ``PWM``, ``UART``, ``I2C``, ``WDT``, ``bitstream``,
``reset``), not the firmware's logic, and keeps what was done where tests can read it. UARTs are backed by file
descriptors the test supplies (the firmware's end of a real pty); I2C devices are objects the test registers.
``reset_state()`` clears everything between tests.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

RP2040_WDT_MAX_MS = 8388  # machine.WDT on rp2 refuses longer timeouts


class Reset(Exception):
    """``machine.reset()`` was called (on the device it never returns)."""


@dataclass
class PinState:
    """One GPIO as the firmware left it, plus the level a test drives onto an input."""

    mode: int | None = None
    pull: int | None = None
    level: int = 0
    handler: Callable[[Any], None] | None = None
    trigger: int = 0
    writes: list[int] = field(default_factory=list)


class I2CDevice(Protocol):
    def read(self, reg: int, n: int) -> bytes: ...

    def write(self, reg: int, data: bytes) -> None: ...


pins: dict[int, PinState] = {}
pwms: dict[int, PWM] = {}
uart_fds: dict[int, int] = {}  # UART id -> fd of the firmware's end of the wire
uarts: dict[int, UART] = {}
i2c_devices: dict[tuple[int, int], I2CDevice] = {}  # (bus id, address) -> device
bitstreams: list[tuple[int, tuple[int, ...], bytes]] = []  # (pin, timing, data) per call
watchdogs: list[WDT] = []
resets = 0


def reset_state() -> None:
    global resets
    for registry in (pins, pwms, uart_fds, uarts, i2c_devices, watchdogs):
        registry.clear()
    bitstreams.clear()
    resets = 0


class Pin:
    """``machine.Pin``: every object for the same number shares one ``PinState``."""

    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id: int, mode: int = -1, pull: int = -1, *, value: int | None = None) -> None:
        self.id = id
        self.state = pins.setdefault(id, PinState())
        if mode != -1:
            self.state.mode = mode
        if pull != -1:
            self.state.pull = pull
            if pull == Pin.PULL_UP and self.state.mode == Pin.IN:
                self.state.level = 1  # an idle input with a pull-up reads high
        if value is not None:
            self.value(value)

    def value(self, x: int | None = None) -> int | None:
        if x is None:
            return self.state.level
        self.state.level = 1 if x else 0
        self.state.writes.append(self.state.level)
        return None

    def irq(self, handler: Callable[[Any], None] | None = None, trigger: int = IRQ_FALLING | IRQ_RISING) -> None:
        self.state.handler = handler
        self.state.trigger = trigger

    # --- test side ---

    @staticmethod
    def drive(id: int, level: int) -> None:
        """Put ``level`` on input ``id`` from outside, firing its interrupt handler on a matching edge."""
        state = pins.setdefault(id, PinState())
        old, state.level = state.level, level
        edge = Pin.IRQ_FALLING if old and not level else Pin.IRQ_RISING if level and not old else 0
        if state.handler is not None and edge & state.trigger:
            state.handler(Pin(id))


class PWM:
    """``machine.PWM``: ``freq()`` and ``duty_u16()``, readable back."""

    def __init__(self, pin: Pin) -> None:
        self.pin = pin.id
        self._freq = 0
        self._duty = 0
        pwms[pin.id] = self

    def freq(self, hz: int | None = None) -> int | None:
        if hz is None:
            return self._freq
        self._freq = hz
        return None

    def duty_u16(self, duty: int | None = None) -> int | None:
        if duty is None:
            return self._duty
        if not 0 <= duty <= 65535:
            raise ValueError(f"duty_u16 out of range: {duty}")
        self._duty = duty
        return None


class UART:
    """``machine.UART`` with ``timeout=0``: ``read(n)`` returns what has arrived or None, ``write`` sends it all."""

    def __init__(self, id: int, baudrate: int = 115200, *, tx: Pin, rx: Pin, timeout: int = 0, rxbuf: int = 256):
        if id not in uart_fds:
            raise ValueError(f"UART({id}) does not exist")
        self.id = id
        self.baudrate = baudrate
        self.pins = (tx.id, rx.id)
        self.fd = uart_fds[id]
        os.set_blocking(self.fd, False)
        uarts[id] = self

    def read(self, n: int = -1) -> bytes | None:
        try:
            data = os.read(self.fd, n if n > 0 else 4096)
        except BlockingIOError:
            return None
        return data or None

    def any(self) -> int:
        return 0  # not used by the firmware; MicroPython's returns the count waiting

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
        return len(data)


class I2C:
    """``machine.I2C``: memory reads and writes go to the device registered at that address, else EIO (no ACK)."""

    def __init__(self, id: int, *, sda: Pin, scl: Pin, freq: int = 400_000) -> None:
        self.id = id
        self.pins = (sda.id, scl.id)
        self.freq = freq

    def _device(self, addr: int) -> I2CDevice:
        device = i2c_devices.get((self.id, addr))
        if device is None:
            raise OSError(errno.EIO, "no ACK")
        return device

    def readfrom_mem(self, addr: int, reg: int, nbytes: int) -> bytes:
        return self._device(addr).read(reg, nbytes)

    def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
        self._device(addr).write(reg, bytes(buf))


class WDT:
    """``machine.WDT``: counts ``feed()`` calls."""

    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        if not 1 <= timeout <= RP2040_WDT_MAX_MS:
            raise ValueError(f"WDT timeout out of range: {timeout}")
        self.timeout = timeout
        self.feeds = 0
        watchdogs.append(self)

    def feed(self) -> None:
        self.feeds += 1


def bitstream(pin: Pin, encoding: int, timing: tuple[int, ...], buf: bytes) -> None:
    if encoding != 0 or len(timing) != 4:
        raise ValueError("bitstream: encoding 0 takes 4 timings")
    bitstreams.append((pin.id, tuple(timing), bytes(buf)))


def reset() -> None:
    global resets
    resets += 1
    raise Reset
