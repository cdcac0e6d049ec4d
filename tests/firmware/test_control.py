"""The firmware's decisions with no hardware at all: heartbeat states, the fan rule, LEDs, failsafe events."""

from __future__ import annotations

import pytest
from fanunit import proto
from fanunit.control import FULL, LIVE, LOST, WAITING, Controller
from hypothesis import given
from hypothesis import strategies as st

TIMEOUT = 10_000
BOTH = ("left", "right")


def fan(pct: int) -> bytes:
    return proto.encode(proto.SET_FAN_PERCENT, pct)


def test_boot_full_then_the_highest_request() -> None:
    c = Controller(BOTH, BOTH, TIMEOUT, 0)
    assert c.fan_percent() == FULL and c.booting() and not c.failsafe_active()
    assert c.receive("left", fan(30), 100) == []
    assert c.fan_percent() == FULL  # the right blade has not spoken
    c.receive("right", fan(45), 200)
    assert c.fan_percent() == 45
    c.receive("right", proto.encode(proto.SET_LED, 1, 2, 3), 300)
    assert c.led("right") == (3, 2, 1) and c.fan_percent() == 45  # an LED frame is a heartbeat, not a duty


def test_a_blade_that_only_set_its_led_gets_full() -> None:
    c = Controller(BOTH, BOTH, TIMEOUT, 0)
    c.receive("left", fan(10), 0)
    c.receive("right", proto.encode(proto.SET_LED, 0, 0, 9), 0)
    assert c.fan_percent() == FULL  # the right blade has not said what it needs


def test_loss_and_recovery() -> None:
    c = Controller(BOTH, BOTH, TIMEOUT, 0)
    c.receive("left", fan(20), 1_000)
    c.receive("right", fan(20), 1_000)
    assert c.update(10_999) == []
    assert c.update(11_000) == ["left", "right"]
    assert c.links["left"].state == LOST and c.fan_percent() == FULL and c.led("left") == (255, 0, 0)
    assert c.update(50_000) == []  # lost once, not again every pass
    (reply,) = c.receive("left", fan(20), 41_500)
    assert reply == proto.failsafe(proto.REASON_HEARTBEAT_LOST, 40)
    assert c.links["left"].state == LIVE and c.led("left") == (0, 0, 0) and c.fan_percent() == FULL
    assert c.receive("right", fan(25), 41_600) == [proto.failsafe(proto.REASON_HEARTBEAT_LOST, 40)]
    assert c.fan_percent() == 25 and c.links["right"].failsafes == 1


def test_never_heard_blades() -> None:
    c = Controller(BOTH, ("left",), TIMEOUT, 0)
    assert c.update(10_000) == ["left"]  # expected and silent since boot
    assert c.links["right"].state == WAITING  # not expected: may stay away
    assert c.receive("left", fan(5), 12_345) == [proto.failsafe(proto.REASON_NEVER_HEARD, 12)]
    assert c.fan_percent() == 5
    c.receive("right", fan(60), 13_000)  # an unexpected blade that speaks counts from then on
    assert c.fan_percent() == 60
    c.receive("left", fan(5), 14_000)
    assert c.update(23_000) == ["right"] and c.fan_percent() == FULL


def test_frames_that_keep_nobody_alive() -> None:
    c = Controller(BOTH, BOTH, TIMEOUT, 0)
    for bad in (fan(101), proto.fan_rpm(100), proto.encode(0x33), proto.button_press(), b"\x7e\x01\x7f"):
        assert c.receive("left", bad, 5_000) == []
    assert c.links["left"].rejected == 4 and c.links["left"].parser.malformed == 1
    assert c.links["left"].state == WAITING and c.update(10_000) == ["left", "right"]


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="expected link 'middle'"):
        Controller(BOTH, ("middle",), TIMEOUT, 0)
    with pytest.raises(ValueError, match="heartbeat timeout"):
        Controller(BOTH, BOTH, 0, 0)


# An event: (blade, what it sends or None for silence, ms that pass before it).
events = st.lists(
    st.tuples(
        st.sampled_from(BOTH), st.one_of(st.none(), st.integers(0, 120), st.binary(max_size=12)), st.integers(0, 6_000)
    ),
    max_size=40,
)


@given(events, st.sampled_from([BOTH, ("left",), ()]))
def test_the_fan_is_full_whenever_an_expected_blade_is_silent(steps: list, expected: tuple) -> None:
    c = Controller(BOTH, expected, TIMEOUT, 0)
    now = 0
    heard: dict[str, int] = {}  # the last valid frame per blade, kept independently of the controller
    asked: dict[str, int] = {}
    for name, sent, wait in steps:
        now += wait
        if isinstance(sent, int):
            c.receive(name, fan(sent), now)
            if sent <= 100:
                heard[name], asked[name] = now, sent
        elif isinstance(sent, bytes):
            c.receive(name, sent.replace(b"\x7e", b""), now)  # noise without a start byte: never a frame
        c.update(now)
        silent = [n for n in BOTH if now - heard.get(n, 0) >= TIMEOUT and (n in heard or n in expected)]
        never = [n for n in expected if n not in heard]
        for n in BOTH:
            assert (c.links[n].state == LOST) == (n in silent)
            assert (c.led(n) == (255, 0, 0)) == (n in silent)
        if silent or never:
            assert c.fan_percent() == FULL
        else:
            live = [asked[n] for n in BOTH if n in heard]
            assert c.fan_percent() == (max(live) if live and all(n in asked for n in heard) else FULL)
