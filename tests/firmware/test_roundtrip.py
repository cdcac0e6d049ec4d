"""The firmware and the agent's own smart-unit backend, wired over real pseudo-terminals: the same frames proven
on both ends. The firmware runs on the stand-in ``machine``; its time and the agent's are one injected clock."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from nodeagent.hw import fanunit_proto as agent_proto
from tests.firmware.conftest import Rig

FULL_SETTING = 63  # the EMC2101 fan-setting register at 100 %


def setting(percent: int) -> int:
    return percent * 63 // 100


def speak(rig: Rig, **duties: int) -> None:
    """Each named blade's agent sets a duty; the firmware takes it in."""
    links = rig.app.control.links
    before = {name: links[name].parser.frames for name in duties}
    for name, duty in duties.items():
        rig.agents[name].set_duty(duty)
    rig.pump(lambda: all(links[n].parser.frames > before[n] and links[n].percent == d for n, d in duties.items()))


def test_boot_default_is_full_until_every_blade_speaks(rig: Rig) -> None:
    assert rig.chip is not None
    assert rig.chip.percent_setting == FULL_SETTING  # before the first pass
    assert rig.machine.pins[rig.cfg.FAN_POWER_PIN].level == 1
    rig.step(500)
    assert rig.chip.percent_setting == FULL_SETTING
    assert rig.led("left") == rig.led("right") == (0, 0, 0)  # booting is not a failsafe yet
    speak(rig, left=40)
    assert rig.chip.percent_setting == FULL_SETTING  # the right blade has not spoken
    speak(rig, right=55)
    assert rig.chip.percent_setting == setting(55)  # the higher of the two requests
    speak(rig, right=20)
    assert rig.chip.percent_setting == setting(40)
    assert rig.chip.regs[0x03] & 0x04 and not rig.chip.regs[0x03] & 0x10  # tach input on, PWM mode


def test_a_unit_for_one_blade_follows_it_alone(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(EXPECTED_LINKS=("left",))
    speak(rig, left=35)
    assert rig.chip is not None and rig.chip.percent_setting == setting(35)
    rig.step(30_000)  # the right blade never speaks: it holds nothing at full
    speak(rig, left=36)
    assert rig.chip.percent_setting == setting(36) and not rig.app.control.failsafe_active()


def test_reports_reach_each_agent(rig: Rig) -> None:
    assert rig.chip is not None
    rig.chip.set_rpm(2400)
    rig.chip.set_temps(31, 27)
    rig.step(2_000)
    left, right = rig.agents["left"], rig.agents["right"]
    rig.agent_poll("left", lambda: left.airflow_temp_c is not None)
    rig.agent_poll("right", lambda: right.airflow_temp_c is not None)
    assert left.read_rpm() == right.read_rpm() == 2400
    assert left.airflow_temp_c == 31.0  # the EMC2101's own sensor to the left blade
    assert right.airflow_temp_c == 27.0  # the external diode to the right
    rig.chip.set_rpm(0)
    rig.step(2_000)
    rig.agent_poll("left", lambda: left.rpm == 0)  # a stopped fan reads 0, not a huge number


def test_leds_follow_each_blade(rig: Rig) -> None:
    rig.agents["left"].set_led(0, 16, 0)
    rig.agents["right"].set_led(200, 1, 127)  # 127 = 0x7F travels escaped
    rig.pump(lambda: rig.app.control.links["right"].rgb != (0, 0, 0) and rig.app.control.links["left"].rgb != (0, 0, 0))
    assert rig.led("left") == (0, 16, 0)
    assert rig.led("right") == (200, 1, 127)
    _pin, timing, data = rig.machine.bitstreams[-1]
    assert timing == (400, 850, 800, 450) and len(data) == 6  # two WS2812s, right first (LED_CHAIN)
    assert data[:3] == bytes((1, 200, 127))  # G, R, B


def press(rig: Rig, times: int) -> None:
    """Press the unit's button ``times`` (active low), 100 ms down and 100 ms up, with contact bounce."""
    pin = rig.cfg.BUTTON_PIN
    for _ in range(times):
        for level in (0, 1, 0):  # bounce on the way down
            rig.machine.Pin.drive(pin, level)
            rig.step(5)
        for _ in range(5):
            rig.step(20)
        rig.machine.Pin.drive(pin, 1)
        for _ in range(5):
            rig.step(20)


def test_button_one_press_left_two_presses_right(rig: Rig) -> None:
    press(rig, 1)
    for _ in range(30):
        rig.step(20)
    rig.agent_poll("left", lambda: rig.presses["left"] == 1)
    press(rig, 2)
    for _ in range(30):
        rig.step(20)
    rig.agent_poll("right", lambda: rig.presses["right"] == 1)
    assert rig.presses == {"left": 1, "right": 1}


def test_heartbeat_loss_goes_full_red_and_tells_the_agent(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    assert rig.chip is not None
    rig.agents["left"].set_led(0, 0, 40)
    speak(rig, left=30, right=30)
    assert rig.chip.percent_setting == setting(30)
    rig.step(9_999)
    assert rig.chip.percent_setting == setting(30)  # not yet
    rig.step(1)
    assert rig.chip.percent_setting == FULL_SETTING
    assert rig.led("left") == rig.led("right") == (255, 0, 0)
    assert rig.machine.pins[rig.cfg.STATUS_LED_PIN].level == 1
    rig.step(5_000)
    with caplog.at_level(logging.INFO):
        speak(rig, left=30)  # the left agent is back: it gets the event, its LED its colour again
        left = rig.agents["left"]
        rig.agent_poll("left", lambda: left.failsafe_events == 1)
    assert left.last_failsafe == agent_proto.Failsafe(agent_proto.FAILSAFE_HEARTBEAT_LOST, 15)
    assert "event=fan_unit_failsafe" in caplog.text and "reason=heartbeat_lost silent_s=15" in caplog.text
    assert [r.levelname for r in caplog.records if "fan_unit_failsafe" in r.message] == ["WARNING"]
    assert rig.led("left") == (0, 0, 40) and rig.led("right") == (255, 0, 0)
    assert rig.chip.percent_setting == FULL_SETTING  # the right blade is still silent
    speak(rig, right=25)
    assert rig.chip.percent_setting == setting(30)
    assert rig.machine.pins[rig.cfg.STATUS_LED_PIN].level == 0
    speak(rig, left=31)  # the event comes once, not with every frame
    rig.step(2_000)
    rig.agent_poll("left", lambda: left.rpm is not None)
    assert left.failsafe_events == 1


def test_a_blade_silent_since_boot_hears_why_on_first_contact(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.step(12_000)
    assert rig.led("left") == (255, 0, 0)
    with caplog.at_level(logging.INFO):
        speak(rig, left=50, right=50)
        rig.agent_poll("left", lambda: rig.agents["left"].failsafe_events == 1)
    assert rig.agents["left"].last_failsafe == agent_proto.Failsafe(agent_proto.FAILSAFE_NEVER_HEARD, 12)
    # every power-up's story (the unit is up before the agent): info, not a warning
    assert {r.levelname for r in caplog.records if "reason=not_heard_since_boot" in r.getMessage()} == {"INFO"}
    assert rig.chip is not None and rig.chip.percent_setting == setting(50)


def test_the_agents_resend_keeps_the_firmware_out_of_failsafe(rig: Rig) -> None:
    # The agent's safety loop sets a fan only when its duty differs (``fan.duty_pct != duty``), once a second. The
    # backend forgets the duty after resend_after_s, so a steady 45 % is still sent: the firmware's heartbeat.
    for _ in range(40):
        for unit in rig.agents.values():
            if unit.duty_pct != 45.0:
                unit.set_duty(45.0)
        rig.step(1_000)
        rig.pump(lambda: True)
    assert not rig.app.control.failsafe_active()
    assert rig.chip is not None and rig.chip.percent_setting == setting(45)
    assert all(unit.failsafe_events == 0 for unit in rig.agents.values())


def test_garbage_on_the_line_is_ignored_and_keeps_nobody_alive(rig: Rig) -> None:
    speak(rig, left=20, right=20)
    fd = rig.agents["left"].fileno()
    frame = agent_proto.set_fan_percent(70)
    junk = [
        b"\x00\xff\x13garbage",
        frame[:4],  # truncated: cut short by the next start byte
        frame[:-2] + b"\x00" + frame[-1:],  # bad checksum
        agent_proto.encode(0x01, (150, 0, 0)),  # a percent above 100
        agent_proto.encode(0x55),  # an unknown command
        agent_proto.fan_rpm(1000),  # a frame only the unit sends
        b"\x7e\x7d\x7f",  # a dangling escape
        b"\x7e" + b"\x01" * 50 + b"\x7f",  # an over-long body
    ]
    control = rig.app.control.links["left"]
    for chunk in junk:
        os.write(fd, chunk)
    os.write(fd, b"\x7e")  # the start of a frame that never ends
    parser = control.parser
    rig.pump(lambda: (control.rejected, parser.bad_checksum, parser.malformed) == (3, 1, 3))
    assert control.percent == 20 and parser.frames == 4  # 20 % earlier, then the three rejected ones
    for _ in range(10):  # 10 s of nothing but junk: the blade is lost all the same
        os.write(fd, junk[0] + junk[3])
        rig.step(1_000)
        rig.pump(lambda: True)
    assert control.state == "lost"
    assert rig.chip is not None and rig.chip.percent_setting == FULL_SETTING
    speak(rig, left=20, right=20)  # a valid frame still works after all that
    assert control.state == "live" and rig.chip.percent_setting == setting(20)


def test_pwm_driver_and_pulse_counting_tach(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(FAN_DRIVER="pwm", FAN_PWM_PIN=20, TACH_PIN=21, EXPECTED_LINKS=("left",))
    pwm = rig.machine.pwms[20]
    assert pwm.freq() == 25_000 and pwm.duty_u16() == 65535  # boot: full
    speak(rig, left=50)
    assert pwm.duty_u16() == 32767
    rig.step(2_000)  # the first report period
    for _ in range(80):  # 80 tach pulses in the next 2 s: 20 turns a second at 2 pulses a turn
        rig.machine.Pin.drive(21, 0)
        rig.machine.Pin.drive(21, 1)
    rig.step(2_000)
    left = rig.agents["left"]
    rig.agent_poll("left", lambda: left.rpm == 1200)
    assert left.airflow_temp_c is None  # no temperature sensor on this driver


def test_inverted_pwm(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(FAN_DRIVER="pwm", FAN_PWM_PIN=20, FAN_PWM_INVERTED=True, EXPECTED_LINKS=("left",))
    assert rig.machine.pwms[20].duty_u16() == 0  # full, on a fan that runs at full with the signal low
    speak(rig, left=25)
    assert rig.machine.pwms[20].duty_u16() == 65535 - 16383


def test_a_failing_fan_controller_is_retried_then_the_unit_resets(rig: Rig) -> None:
    assert rig.chip is not None
    speak(rig, left=30, right=30)
    rig.chip.fail = True
    speak(rig, left=60)  # the duty cannot be set: the firmware keeps trying every pass
    rig.step(20)
    rig.step(20)
    assert rig.app.fan_errors == 3
    rig.chip.fail = False
    rig.step(20)
    assert rig.app.fan_errors == 0 and rig.chip.percent_setting == setting(60)  # re-initialised, then set
    rig.chip.fail = True
    speak(rig, left=61)
    with pytest.raises(rig.machine.Reset):
        for _ in range(10):
            rig.step(20)
    assert rig.machine.resets == 1 and rig.app.fan_errors == 5


def test_the_watchdog_is_fed_every_pass(rig: Rig) -> None:
    (wdt,) = rig.machine.watchdogs
    assert wdt.timeout == rig.cfg.WATCHDOG_MS
    for _ in range(7):
        rig.step(20)
    assert wdt.feeds == 7
