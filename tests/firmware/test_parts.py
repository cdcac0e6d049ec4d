"""The firmware's small parts: button bursts and bounce, the LED byte chain, tach maths, the EMC2101 registers."""

from __future__ import annotations

import pytest
from fanunit import emc2101, leds
from fanunit.button import PressCounter, target
from fanunit.tach import PulseCounter, rpm_from_pulses
from hypothesis import given
from hypothesis import strategies as st

from tests.firmware.conftest import Emc2101Chip


class FakeI2C:
    """MicroPython's I2C memory methods over one register-file device."""

    def __init__(self, chip: Emc2101Chip) -> None:
        self.chip = chip

    def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
        assert addr == emc2101.ADDRESS
        return self.chip.read(reg, n)

    def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
        assert addr == emc2101.ADDRESS
        self.chip.write(reg, buf)


def run_button(levels: list[tuple[bool, int]], debounce_ms: int = 30, window_ms: int = 600) -> list[int]:
    """Sample every 10 ms through (level, hold_ms) spans, then released past the window; the bursts reported."""
    counter, now, bursts = PressCounter(debounce_ms, window_ms), 0, []
    for level, hold_ms in [*levels, (False, window_ms + 100)]:
        end = now + hold_ms
        while now < end:
            bursts += [n for n in [counter.sample(level, now)] if n]
            now += 10
    return bursts


def test_presses_and_bursts() -> None:
    assert run_button([(True, 100)]) == [1]
    assert run_button([(True, 100), (False, 100), (True, 100)]) == [2]
    assert run_button([(True, 100), (False, 800), (True, 100)]) == [1, 1]  # two bursts
    assert run_button([(True, 20)]) == []  # shorter than the debounce: noise
    assert target(1, ("left", "right")) == "left"
    assert target(2, ("left", "right")) == target(5, ("left", "right")) == "right"


@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=2), min_size=1, max_size=3))
def test_bounce_shorter_than_the_debounce_adds_no_press(bounces: list[list[bool]]) -> None:
    # Each clean 100 ms press is preceded by contact bounce: 10 ms flickers, never held for the 30 ms debounce.
    levels: list[tuple[bool, int]] = []
    for flicker in bounces:
        levels += [(level, 10) for level in flicker] + [(True, 100), (False, 60)]
    assert run_button(levels, window_ms=2_000) == [len(bounces)]


def test_led_chain_bytes() -> None:
    colours = {"left": (1, 2, 3), "right": (4, 5, 6)}
    assert leds.chain_bytes(colours, ("right", "left")) == bytes((5, 4, 6, 2, 1, 3))
    assert leds.chain_bytes(colours, ("left",), "RGB") == bytes((1, 2, 3))
    assert leds.chain_bytes({}, ("left", "right"), "BGR") == bytes(6)  # unknown blades are dark
    with pytest.raises(ValueError, match="byte order must be one of"):
        leds.chain_bytes(colours, ("left",), "RGBW")


def test_tach_counts() -> None:
    assert rpm_from_pulses(80, 2_000) == 1200
    assert rpm_from_pulses(0, 1_000) == 0
    with pytest.raises(ValueError, match="elapsed_ms"):
        rpm_from_pulses(1, 0)
    tach = PulseCounter(2, now_ms=0)
    for _ in range(50):
        tach.edge()
    assert tach.rpm(1_000) == 1500 and tach.pulses == 0
    assert tach.rpm(1_000) is None  # no time has passed
    assert tach.rpm(2_000) == 0


@given(st.integers(0, 100))
def test_emc2101_duty_and_readings(percent: int) -> None:
    chip = Emc2101Chip()
    fan = emc2101.Emc2101(FakeI2C(chip))
    fan.init()
    assert chip.regs[0x03] == 0x04 and chip.regs[0x4A] & 0x20 and not chip.regs[0x4B] & 0x20
    fan.set_percent(percent)
    assert chip.percent_setting == percent * 63 // 100 <= 63
    chip.set_rpm(3000)
    assert fan.rpm() == 3000
    chip.set_temps(-5, 41)
    assert fan.temperatures() == {"internal": -5, "external": 41}
    chip.set_rpm(0)
    assert fan.rpm() == 0
    chip.fail = True
    with pytest.raises(OSError):
        fan.rpm()
