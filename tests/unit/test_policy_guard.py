"""Thermal guard: levels with hysteresis, freeze/stop, the critical latch, sensor loss, one event per change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.policy.config import GuardConfig
from nodeagent.policy.thermal_guard import LEVELS, GuardDecision, GuardState, clear, guard

CFG = GuardConfig()

BOUNDARIES = (CFG.warm_c, CFG.warm_exit_c, CFG.hot_c, CFG.resume_c, CFG.critical_c, CFG.clear_c)
temps = st.none() | st.floats(30.0, 100.0) | st.sampled_from(BOUNDARIES)
readings = st.lists(
    st.tuples(temps, st.floats(0.0, 400.0)),  # (temperature, seconds since the previous reading)
    min_size=1,
    max_size=60,
)


def walk(steps: list[tuple[float | None, float]], state: GuardState | None = None) -> list[GuardDecision]:
    state, now, out = state or GuardState(), 0.0, []
    for temp, gap in steps:
        now += gap
        decision = guard(temp, state, CFG, now)
        out.append(decision)
        state = decision.state
    return out


@given(readings)
def test_never_resumes_a_frozen_job_above_resume(steps: list[tuple[float | None, float]]) -> None:
    decisions = walk(steps)
    for (temp, _), before, after in zip(steps[1:], decisions, decisions[1:], strict=False):
        if before.freeze_job and temp is not None and temp >= CFG.resume_c:
            assert after.freeze_job


@given(readings)
def test_critical_always_stops_and_latches(steps: list[tuple[float | None, float]]) -> None:
    for (temp, _), d in zip(steps, walk(steps), strict=True):
        if temp is not None and temp >= CFG.critical_c:
            assert d.stop_job and d.level == "critical" and d.state.latched
            assert d.fan_full and d.refuse_heavy
        elif temp is None or temp < CFG.critical_c:
            assert not d.stop_job


@given(readings)
def test_unreadable_means_fan_full_freeze_refuse_but_no_stop(steps: list[tuple[float | None, float]]) -> None:
    for (temp, _), d in zip(steps, walk(steps), strict=True):
        if temp is None:
            assert d.fan_full and d.freeze_job and d.refuse_heavy and not d.stop_job
            assert d.level in ("hot", "critical")
        elif temp >= CFG.warm_c:
            assert d.fan_full


@given(readings)
def test_every_transition_yields_exactly_one_event_with_the_temperatures(
    steps: list[tuple[float | None, float]],
) -> None:
    before = GuardState()
    for (temp, _), d in zip(steps, walk(steps), strict=True):
        after = d.state
        changes = [e for e in d.events if e.kind not in ("auto_cleared", "cleared")]
        if after.level != before.level or after.sensor_lost != before.sensor_lost:
            assert len(changes) == 1
            (event,) = changes
            assert (event.from_level, event.to_level, event.temp_c) == (before.level, after.level, temp)
            if event.kind in ("level_up", "level_down"):
                assert event.threshold_c is not None
                crossed_up = event.kind == "level_up" and temp >= event.threshold_c
                assert crossed_up or (event.kind == "level_down" and temp < event.threshold_c)
        else:
            assert changes == []
        auto = [e for e in d.events if e.kind == "auto_cleared"]
        assert len(auto) == (1 if before.latched and not after.latched else 0)
        before = after


def test_a_heat_wave_step_by_step() -> None:
    steps = [(60.0, 1), (71.0, 1), (68.0, 1), (66.0, 1), (81.0, 1), (75.0, 1), (71.9, 1), (86.0, 1), (60.0, 1)]
    got = [
        (d.level, d.fan_full, d.freeze_job, d.stop_job, d.refuse_heavy, [e.kind for e in d.events]) for d in walk(steps)
    ]
    assert got == [
        ("normal", False, False, False, False, []),
        ("warm", True, False, False, False, ["level_up"]),
        ("warm", True, False, False, False, []),  # held above warm_exit_c
        ("normal", False, False, False, False, ["level_down"]),
        ("hot", True, True, False, True, ["level_up"]),
        ("hot", True, True, False, True, []),  # frozen until below resume_c
        ("warm", True, False, False, False, ["level_down"]),
        ("critical", True, True, True, True, ["level_up"]),
        ("normal", True, False, False, True, ["level_down"]),  # latched: fan full, no heavy jobs
    ]


def test_latch_clears_itself_after_staying_cool() -> None:
    latched = walk([(86.0, 0)])[-1].state
    d = walk([(60.0, 0), (64.0, 299.0)], latched)
    assert d[-1].state.latched and d[-1].refuse_heavy and d[-1].events == ()
    d = walk([(60.0, 0), (66.0, 200.0), (60.0, 10.0), (60.0, 299.0)], latched)  # 66 °C restarts the count
    assert d[-1].state.latched
    (event,) = guard(60.0, d[-1].state, CFG, 10.0 + 200 + 10 + 299 + 1).events
    assert (event.kind, event.threshold_c, event.temp_c) == ("auto_cleared", CFG.clear_c, 60.0)


def test_operator_clear() -> None:
    d = walk([(86.0, 0), (60.0, 1)])[-1]
    state, events = clear(d.state, 2.0)
    assert not state.latched and [(e.kind, e.temp_c) for e in events] == [("cleared", 60.0)]
    assert not guard(60.0, state, CFG, 3.0).refuse_heavy
    assert clear(state, 4.0) == (state, ())  # nothing latched: nothing to clear
    hot_state, _ = clear(walk([(90.0, 0)])[-1].state, 1.0)
    assert guard(90.0, hot_state, CFG, 2.0).state.latched  # still critical: latched again


@pytest.mark.parametrize(("back_c", "frozen"), [(75.0, True), (71.0, False)])
def test_sensor_lost_then_back(back_c: float, frozen: bool) -> None:
    d = walk([(50.0, 0), (None, 1), (None, 1), (back_c, 1)])
    assert [e.kind for e in d[1].events] == ["sensor_lost"] and d[2].events == ()
    (event,) = d[3].events
    assert (event.kind, event.from_level, event.temp_c) == ("sensor_restored", "hot", back_c)
    assert d[3].freeze_job is frozen


def test_sensor_lost_keeps_a_critical_latch() -> None:
    d = walk([(86.0, 0), (None, 1)])[-1]
    assert d.level == "critical" and d.state.latched and not d.stop_job


def test_levels_are_ordered() -> None:
    assert LEVELS == ("normal", "warm", "hot", "critical")
