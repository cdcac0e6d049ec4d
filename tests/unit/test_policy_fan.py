"""Fan curve policy: curve, fail-safe, hysteresis, rate limits; [policy.*] config checks and docs/policy.md tables."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.policy.config import SECTIONS, FanCurveConfig, FanPoint, GuardConfig, PolicyConfig
from nodeagent.policy.fan import FULL_PCT, FanState, curve_duty, fan_duty
from tests.doc_defaults import toml_default

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
CFG = FanCurveConfig()
EPS = 1e-9

temps = st.floats(min_value=0.0, max_value=110.0, allow_nan=False)
gaps = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
unreadable = st.sampled_from([None, math.nan, math.inf, -math.inf])
modes = st.one_of(st.just("auto"), st.floats(min_value=0.0, max_value=100.0))
states = st.builds(
    FanState,
    duty_pct=st.none() | st.floats(0.0, 100.0),
    anchor_c=st.none() | temps,
    t=st.none() | st.floats(0.0, 1000.0),
)


def run(readings: list[float | None], step_s: list[float], cfg: FanCurveConfig = CFG, state: FanState | None = None):
    """Feed a sequence of temperatures at the given gaps; return the duties."""
    state, now, duties = state or FanState(), 0.0, []
    for temp, gap in zip(readings, step_s, strict=True):
        now += gap
        duty, state = fan_duty(temp, state, cfg, now)
        duties.append(duty)
    return duties


@pytest.mark.parametrize(
    ("temp", "duty"),
    [(20.0, 0.0), (49.9, 0.0), (50.0, 30.0), (55.0, 40.0), (60.0, 50.0), (67.5, 70.0), (75.0, 100.0), (99.0, 100.0)],
)
def test_default_curve_follows_the_pi5_firmware_trip_points(temp: float, duty: float) -> None:
    assert curve_duty(temp, CFG) == pytest.approx(duty)


def test_below_first_point_and_min_duty() -> None:
    assert curve_duty(30.0, FanCurveConfig(below_first="first")) == 30.0
    assert curve_duty(30.0, FanCurveConfig(min_duty_pct=20.0)) == 20.0
    assert curve_duty(80.0, FanCurveConfig(min_duty_pct=20.0)) == 100.0


@given(temps, temps)
def test_curve_is_monotone(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= curve_duty(lo, CFG) <= curve_duty(hi, CFG) <= 100.0


@given(unreadable, states, modes, st.floats(0.0, 2000.0))
def test_every_unreadable_temperature_gives_full_at_once(temp: float | None, state: FanState, mode, now: float) -> None:
    duty, new = fan_duty(temp, state, CFG, now, mode=mode)
    assert duty == FULL_PCT == new.duty_pct
    assert new.anchor_c == state.anchor_c


@given(temps, states, modes)
def test_force_full_wins_over_everything(temp: float, state: FanState, mode) -> None:
    assert fan_duty(temp, state, CFG, 1000.0, mode=mode, force_full=True)[0] == FULL_PCT


@given(temps, states, st.floats(-50.0, 150.0))
def test_operator_percent_is_honoured_at_once(temp: float, state: FanState, percent: float) -> None:
    duty, _ = fan_duty(temp, state, CFG, 1000.0, mode=percent)
    assert duty == min(max(percent, 0.0), 100.0)


def test_operator_percent_that_is_not_a_number_is_full() -> None:
    assert fan_duty(40.0, FanState(), CFG, 0.0, mode=math.nan)[0] == FULL_PCT


@given(st.lists(st.tuples(temps, gaps), min_size=1, max_size=40))
def test_duty_never_decreases_while_temperature_rises(steps: list[tuple[float, float]]) -> None:
    readings = sorted(t for t, _ in steps)
    duties = run(readings, [g for _, g in steps])
    assert all(b >= a for a, b in itertools.pairwise(duties))


@given(temps, states)
def test_constant_temperature_converges(temp: float, state: FanState) -> None:
    enough = math.ceil(100.0 / CFG.max_fall_pct_per_s) + 2
    duties = run([temp] * enough, [1.0] * enough, state=dataclasses.replace(state, t=None if state.t is None else 0.0))
    anchor = temp if state.anchor_c is None else min(max(state.anchor_c, temp), temp + CFG.hysteresis_c)
    assert duties[-1] == pytest.approx(curve_duty(anchor, CFG))
    assert duties[-1] == duties[-2]  # settled
    if state.anchor_c is None or state.anchor_c <= temp:
        assert duties[-1] == pytest.approx(curve_duty(temp, CFG))  # the curve's own value


@given(
    st.floats(40.0, 85.0),
    st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=60),
    st.lists(gaps, min_size=60, max_size=60),
)
def test_no_oscillation_when_temperature_dithers_within_half_the_hysteresis(
    point: float, wobble: list[float], step_s: list[float]
) -> None:
    readings = [point + w * CFG.hysteresis_c for w in wobble]
    duties = run(readings, step_s[: len(readings)])
    assert all(b >= a - EPS for a, b in itertools.pairwise(duties))  # never turns round


def test_hysteresis_like_the_firmware() -> None:
    duties = run([52.0, 48.0, 47.1, 46.5], [1.0] * 4)
    assert duties == pytest.approx([34.0, 34.0, 34.0, 33.0])  # held until 52 - 5 = 47 °C, then trails 5 °C above
    state = FanState(duty_pct=30.0, anchor_c=50.0, t=0.0)
    duty, _ = fan_duty(44.0, state, CFG, 100.0)  # plenty of time: the fall limit does not bind
    assert duty == 0.0  # 44 + 5 is below the first point


@given(st.lists(st.tuples(st.one_of(temps, unreadable), gaps, modes, st.booleans()), min_size=2, max_size=40))
def test_rate_limit_between_any_two_calls(calls: list) -> None:
    state, now, prev = FanState(), 0.0, None
    for temp, gap, mode, force in calls:
        now += gap
        duty, state = fan_duty(temp, state, CFG, now, mode=mode, force_full=force)
        automatic = mode == "auto" and not force and temp is not None and math.isfinite(temp)
        if prev is not None and automatic:
            assert duty - prev <= CFG.max_rise_pct_per_s * gap + EPS
            assert prev - duty <= CFG.max_fall_pct_per_s * gap + EPS
        prev = duty


def test_clock_going_backwards_changes_nothing() -> None:
    duty, state = fan_duty(70.0, FanState(duty_pct=40.0, anchor_c=60.0, t=100.0), CFG, 50.0)
    assert duty == 40.0 and state.t == 50.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": ()}, "policy.fan.points: expected at least one point"),
        ({"points": (FanPoint(50, 30), FanPoint(50, 40))}, "policy.fan.points[1].temp_c: expected a number above 50"),
        ({"points": (FanPoint(50, 30), FanPoint(60, 20))}, "policy.fan.points[1].duty_pct: expected a number at least"),
        ({"points": (FanPoint(50, 130),)}, "policy.fan.points[0].duty_pct: expected a number from 0 to 100, got 130"),
        ({"min_duty_pct": -1.0}, "policy.fan.min_duty_pct: expected a number from 0 to 100, got -1.0"),
        ({"hysteresis_c": -1.0}, "policy.fan.hysteresis_c: expected a number at least 0"),
        ({"max_fall_pct_per_s": 0.0}, "policy.fan.max_fall_pct_per_s: expected a number above 0"),
        ({"below_first": "on"}, 'policy.fan.below_first: expected one of "off", "first"'),
    ],
)
def test_bad_fan_config_names_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        FanCurveConfig(**kwargs)


def _doc_tables() -> dict[str, dict[str, str]]:
    """Key -> default of the `| key | default | meaning |` table under each `## [policy.<section>]` heading."""
    tables: dict[str, dict[str, str]] = {}
    section, in_table = "", False
    for line in DOC.read_text().splitlines():
        if m := re.match(r"^## \[policy\.(\w+)\]", line):
            section, in_table = m.group(1), False
            tables[section] = {}
        elif line.startswith("## "):
            section = ""
        elif line.startswith("| key | default | meaning |"):
            in_table = bool(section)
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (m := re.match(r"^\| `(\w+)` \| `(.*?)` \|", line)):
            tables[section][m.group(1)] = m.group(2)
    return tables


def test_docs_list_every_policy_key_with_the_code_default() -> None:
    code = {
        name: {f.name: toml_default(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}
        for name, cls in SECTIONS.items()
    }
    assert _doc_tables() == code
    assert [f.name for f in dataclasses.fields(PolicyConfig)] == list(SECTIONS)


def test_guard_config_checks_its_order() -> None:
    with pytest.raises(ConfigError, match=re.escape("policy.guard.resume_c: expected a number below hot_c (80.0)")):
        GuardConfig(resume_c=81.0)
