"""Fixtures for the fan-unit firmware: the stand-in ``machine``, an EMC2101 on its I2C bus, and a rig that wires
the firmware to the agent's own smart-unit backend over real pseudo-terminals (one per blade)."""

from __future__ import annotations

import os
import select
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from nodeagent.hw.fans.smartunit import SmartFanUnit
from tests.firmware import fake_machine

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))  # the device's import root: `import fanunit` as on the RP2040

from fanunit import config as device_config  # noqa: E402 - needs the path above
from fanunit.app import App  # noqa: E402


def make_config(**overrides: Any) -> SimpleNamespace:
    """The shipped ``fanunit/config.py`` with ``overrides``, as the namespace ``App`` and ``Board`` read."""
    values = {k: v for k, v in vars(device_config).items() if k.isupper()}
    unknown = set(overrides) - set(values)
    assert not unknown, f"not in config.py: {unknown}"
    values.update(overrides)
    return SimpleNamespace(**values)


class Emc2101Chip:
    """An EMC2101's register file: what the firmware writes stays, tach and temperatures are the test's to set."""

    def __init__(self) -> None:
        self.regs = bytearray(256)
        self.regs[0x03] = 0x10  # DAC mode at power-on, so init() has something to clear
        self.regs[0x4B] = 0x3F
        self.fail = False
        self.set_rpm(0)

    def set_rpm(self, rpm: int) -> None:
        count = 0xFFFF if rpm == 0 else 5_400_000 // rpm
        self.regs[0x46], self.regs[0x47] = count & 0xFF, count >> 8

    def set_temps(self, internal_c: int, external_c: int) -> None:
        self.regs[0x00], self.regs[0x01] = internal_c & 0xFF, external_c & 0xFF

    @property
    def percent_setting(self) -> int:
        return self.regs[0x4C]

    def read(self, reg: int, n: int) -> bytes:
        if self.fail:
            raise OSError(5, "EIO")
        return bytes(self.regs[reg : reg + n])

    def write(self, reg: int, data: bytes) -> None:
        if self.fail:
            raise OSError(5, "EIO")
        self.regs[reg : reg + len(data)] = data


@pytest.fixture
def machine() -> Iterator[ModuleType]:
    """The stand-in ``machine`` module, installed where ``fanunit.board`` imports it from."""
    fake_machine.reset_state()
    saved = sys.modules.get("machine")
    sys.modules["machine"] = fake_machine
    sys.modules.pop("fanunit.board", None)  # bind the stand-in on import
    try:
        yield fake_machine
    finally:
        sys.modules.pop("fanunit.board", None)
        if saved is None:
            sys.modules.pop("machine", None)
        else:
            sys.modules["machine"] = saved
        fake_machine.reset_state()


class Clock:
    """A settable clock: seconds for the agent, milliseconds for the firmware, the same instant."""

    def __init__(self) -> None:
        self.ms = 1_000

    def __call__(self) -> float:
        return self.ms / 1000.0

    def advance(self, ms: int) -> None:
        self.ms += ms


class Rig:
    """The firmware (``App`` on the stand-in ``machine``) and one agent backend per blade, over real ptys."""

    def __init__(self, machine: ModuleType, cfg: SimpleNamespace, chip: Emc2101Chip | None) -> None:
        self.machine = machine
        self.cfg = cfg
        self.clock = Clock()
        self.chip = chip
        self.presses: dict[str, int] = {}
        self.agents: dict[str, SmartFanUnit] = {}
        self._fds: list[int] = []
        if chip is not None:
            machine.i2c_devices[(cfg.I2C_ID, cfg.EMC2101_ADDRESS)] = chip
        for name, uart_id, *_ in cfg.LINKS:
            master, slave = os.openpty()
            tty.setraw(slave)
            self._fds += [master, slave]
            machine.uart_fds[uart_id] = master
            self.presses[name] = 0
            self.agents[name] = SmartFanUnit(
                os.ttyname(slave), clock=self.clock, on_button=lambda name=name: self._pressed(name)
            )
        from fanunit.board import Board

        self.board = Board(cfg, self.clock.ms)
        self.app = App(self.board, cfg, self.clock.ms)

    def _pressed(self, name: str) -> None:
        self.presses[name] += 1

    @property
    def masters(self) -> list[int]:
        return [self.machine.uart_fds[link[1]] for link in self.cfg.LINKS]

    def step(self, advance_ms: int = 0) -> None:
        """Advance the shared clock, then run one firmware pass."""
        self.clock.advance(advance_ms)
        self.app.step(self.clock.ms)

    def pump(self, done: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Run firmware passes (clock still) until ``done()``: pty bytes cross a kernel work queue, not at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.app.step(self.clock.ms)
            if done():
                return
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the firmware did not get there"
            select.select(self.masters, [], [], min(remaining, 0.05))

    def agent_poll(self, name: str, done: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Poll the agent's backend until ``done()`` (it waits on its UART, never sleeps)."""
        unit = self.agents[name]
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the {name} agent did not hear it"
            select.select([unit.fileno()], [], [], remaining)
            unit.poll()

    def led(self, name: str) -> tuple[int, int, int]:
        """The (red, green, blue) the firmware last put on blade ``name``'s LED (GRB on the wire)."""
        data = self.machine.bitstreams[-1][2]
        i = self.cfg.LED_CHAIN.index(name) * 3
        green, red, blue = data[i : i + 3]
        return red, green, blue

    def close(self) -> None:
        for unit in self.agents.values():
            unit.close()
        for fd in self._fds:
            os.close(fd)


@pytest.fixture
def rig_factory(machine: ModuleType) -> Iterator[Callable[..., Rig]]:
    """``rig_factory(**config_overrides)``: a wired firmware and its agents; closed after the test."""
    rigs: list[Rig] = []

    def make(chip: bool = True, **overrides: Any) -> Rig:
        cfg = make_config(**overrides)
        rig = Rig(machine, cfg, Emc2101Chip() if chip and cfg.FAN_DRIVER == "emc2101" else None)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    """The shipped configuration: two blades, the EMC2101 fan driver."""
    return rig_factory()
