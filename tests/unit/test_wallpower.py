"""The smart-plug power parser (zigbee2mqtt, Tasmota, a plain number) and the meter's window."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.wallpower import PowerFormatError, WallMeter, parse_power

watts = st.floats(0, 5000, allow_nan=False)


@given(watts, st.dictionaries(st.sampled_from(["voltage", "current", "energy", "state", "linkquality"]), st.integers()))
def test_zigbee2mqtt(w: float, extra: dict[str, int]) -> None:
    assert parse_power(json.dumps({**extra, "power": w}).encode()) == pytest.approx(w)


@given(watts)
def test_tasmota_sensor(w: float) -> None:
    payload = {"Time": "2026-11-23T15:00:00", "ENERGY": {"Total": 1.5, "Power": w, "Voltage": 231, "Current": 0.1}}
    assert parse_power(json.dumps(payload).encode()) == pytest.approx(w)


@given(st.lists(watts, min_size=1, max_size=4))
def test_tasmota_multi_channel_adds_the_channels(ws: list[float]) -> None:
    assert parse_power(json.dumps({"ENERGY": {"Power": ws}}).encode()) == pytest.approx(sum(ws))


@given(watts)
def test_plain_number(w: float) -> None:
    assert parse_power(f" {w!r}\n".encode()) == pytest.approx(w)


@given(st.binary(max_size=64))
def test_any_bytes_give_watts_or_a_clear_error(payload: bytes) -> None:
    try:
        w = parse_power(payload)
    except PowerFormatError as exc:
        assert str(exc)
    else:
        assert w >= 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"power": "high"}', "power: expected a number of watts"),
        (b'{"power": -3}', "0 or more"),
        (b'{"power": true}', "expected a number"),
        (b'{"ENERGY": {"Total": 1}}', "no power reading"),
        (b'{"temperature": 20}', "zigbee2mqtt 'power' or Tasmota 'ENERGY.Power'"),
        (b"ON", "not JSON or a number"),
        (b"[1, 2]", "expected a JSON object or a number"),
        (b"\xff\xfe", "not UTF-8"),
        (b"NaN", "finite"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(PowerFormatError, match=message):
        parse_power(payload)


def test_meter_window_mean_peak_and_the_reading_in_force_at_the_start() -> None:
    now = iter([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    meter = WallMeter("plug", clock=lambda: next(now))
    for w in (100, 10, 20, 30, 99, 500):  # at t = 1, 3, 5, 7, 9, 11
        meter.tap("plug", str(w).encode())
    meter.tap("other", b"1000")
    meter.tap("plug", b"garbage")
    power = meter.window(4.0, 9.5)  # 10 W was the reading when the run began at t=4
    assert power is not None and (power.avg_w, power.peak_w, power.samples) == (pytest.approx(39.75), 99, 4)
    assert power.fields(79.5) == {
        "wall_power_avg_w": 39.75,
        "wall_power_peak_w": 99.0,
        "wall_power_samples": 4,
        "wall_gflops_per_w": 2.0,
    }
    assert meter.errors and "not JSON" in meter.errors[0]
    assert WallMeter("plug").window(0, 10) is None
