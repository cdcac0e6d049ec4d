"""Slot power lines against gpiozero's mock pins: which line, which level, for how long; and finding the
expander's gpiochip in a sysfs tree laid out like the kernel's (gpiochips under /sys/bus/gpio/devices)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.slot_lines import SlotLines, SlotPowerConfig, find_chip


@pytest.fixture
def factory() -> Iterator[Any]:
    f = MockFactory()
    f.reset()  # gpiozero 1.6 keeps mock pins class-wide
    try:
        yield f
    finally:
        f.reset()


class Recorder:
    """Stands in for time.sleep: records each wait with the level of every line the SlotLines has claimed."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.lines: SlotLines | None = None
        self.waits: list[tuple[float, dict[int, bool]]] = []

    def __call__(self, seconds: float) -> None:
        assert self.lines is not None
        self.waits.append((seconds, {n: self.factory.pin(n).state for n in self.lines._lines}))


def lines(factory: Any, cfg: SlotPowerConfig | None = None) -> tuple[SlotLines, Recorder]:
    rec = Recorder(factory)
    rec.lines = SlotLines(cfg or SlotPowerConfig(), factory, sleep=rec)
    return rec.lines, rec


@pytest.mark.parametrize(
    ("action", "waits"),
    [
        ("on", [(1.0, False)]),
        ("off", [(1.0, False)]),
        ("force-off", [(8.0, False)]),
        ("cycle", [(8.0, False), (5.0, True), (1.0, False)]),
    ],
)
def test_each_action_pulses_the_slots_line_low_for_its_time(
    factory: Any, action: str, waits: list[tuple[float, bool]]
) -> None:
    sl, rec = lines(factory)
    sl.act(action, 3)
    assert [(s, levels[3]) for s, levels in rec.waits] == waits
    assert factory.pin(3).state is True  # released high (inactive) afterwards
    assert all(set(levels) == {3} for _, levels in rec.waits), "another line was claimed"
    sl.close()


def test_lines_idle_high_from_the_moment_they_are_claimed(factory: Any) -> None:
    sl, _ = lines(factory)
    sl.act("on", 5)
    states = [s.state for s in factory.pin(5).states]
    # The mock pin's own initial reading, then: claimed inactive (high), the pulse, released. Never a glitch low
    # at the claim, which would be a press of the module's power button.
    assert states[1:] == [True, False, True]
    sl.close()


def test_timings_come_from_the_config(factory: Any) -> None:
    sl, rec = lines(factory, SlotPowerConfig(on_pulse_s=0.3, force_off_s=10.0, cycle_gap_s=2.0))
    sl.act("cycle", 2)
    assert [s for s, _ in rec.waits] == [10.0, 2.0, 0.3]


@pytest.mark.parametrize(("action", "slot"), [("on", 0), ("on", 8), ("reboot", 2)])
def test_bad_requests_raise_before_touching_a_line(factory: Any, action: str, slot: int) -> None:
    sl, rec = lines(factory)
    with pytest.raises(ValueError):
        sl.act(action, slot)
    assert rec.waits == []


def test_a_timing_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"slot_power.force_off_s: expected seconds above 0"):
        SlotPowerConfig(force_off_s=0.0)


def gpio_tree(root: Path, chips: dict[int, str]) -> SysfsRoot:
    """gpiochips as the kernel lists them: /sys/bus/gpio/devices/gpiochipN -> the chip's device directory.
    ``chips``: number -> "i2c:NAME" (an I2C expander) or "platform" (an SoC/RP1 GPIO block)."""
    bus = root / "sys/bus/gpio/devices"
    bus.mkdir(parents=True)
    for n, kind in chips.items():
        if kind.startswith("i2c:"):
            client = root / f"sys/devices/platform/axi/1f00074000.i2c/i2c-1/1-00{20 + n}"
            client.mkdir(parents=True)
            (client / "name").write_text(kind[4:] + "\n")
        else:
            client = root / f"sys/devices/platform/axi/1f000d0000.gpio{n}"
            client.mkdir(parents=True)
        (client / f"gpiochip{n}").mkdir()
        (bus / f"gpiochip{n}").symlink_to(client / f"gpiochip{n}")
    return SysfsRoot(root)


def test_auto_finds_the_one_i2c_expander(tmp_path: Path) -> None:
    root = gpio_tree(tmp_path, {0: "platform", 10: "platform", 14: "i2c:pca9535"})
    assert find_chip(root, SlotPowerConfig()) == 14


def test_auto_with_two_expanders_names_them_and_the_fix(tmp_path: Path) -> None:
    root = gpio_tree(tmp_path, {0: "platform", 14: "i2c:pca9535", 15: "i2c:pcf8574"})
    with pytest.raises(HardwareError, match=r"gpiochip14 \(pca9535.*gpiochip15 \(pcf8574.*slot_power.chip"):
        find_chip(root, SlotPowerConfig())
    assert find_chip(root, SlotPowerConfig(chip_names=("pcf8574",))) == 15


def test_no_expander_and_an_explicit_chip(tmp_path: Path) -> None:
    root = gpio_tree(tmp_path, {0: "platform"})
    with pytest.raises(HardwareError, match="found none"):
        find_chip(root, SlotPowerConfig())
    assert find_chip(root, SlotPowerConfig(chip="gpiochip14")) == 14
    assert find_chip(root, SlotPowerConfig(chip="7")) == 7
    with pytest.raises(HardwareError, match=r"slot_power\.chip"):
        find_chip(root, SlotPowerConfig(chip="expander"))
