"""Power budget: heavy-job admission by estimate, and the frequency cap that steps down and back up."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.policy.config import PowerConfig
from nodeagent.policy.power_budget import (
    NodePower,
    NodeReading,
    PowerState,
    admit_heavy,
    cap_frequency,
    chassis_load_w,
    chassis_power_w,
)

CFG = PowerConfig()
FREQS = tuple(range(1_000_000, 2_400_001, 100_000))  # BCM2712 scaling_available_frequencies
LADDER = [f for f in FREQS if f >= CFG.min_freq_khz]
SEVEN = {f"n{i}": NodePower(CFG.node_idle_w, CFG.node_heavy_w) for i in range(1, 8)}


def test_heavy_jobs_are_admitted_while_the_estimate_fits() -> None:
    running = ["n1", "n2", "n3"]
    assert admit_heavy(SEVEN, running, CFG, starting=["n4"]).admitted  # 3.6 + 4 × 10 + 3 × 4 = 55.6 W
    refused = admit_heavy(SEVEN, [*running, "n4"], CFG, starting=["n5"])  # 3.6 + 5 × 10 + 2 × 4 = 61.6 W
    assert not refused.admitted
    (reason,) = refused.reasons
    assert "61.6 W" in reason and "60 W budget" in reason and "n5" in reason
    assert admit_heavy(dict(list(SEVEN.items())[:5]), running, CFG, starting=["n4", "n5"]).admitted  # 53.6 W


def test_a_node_without_an_estimate_counts_with_the_default() -> None:
    assert chassis_load_w({}, ["x"], CFG) == pytest.approx(CFG.base_w + CFG.node_heavy_w)
    assert chassis_load_w({"x": NodePower(1.0, 2.0)}, [], CFG) == pytest.approx(CFG.base_w + 1.0)


def run(measured: list[float | None], cfg: PowerConfig = CFG, tick_s: float = 1.0, state: PowerState | None = None):
    """Call cap_frequency once a tick; return (caps, events) per tick."""
    state, out = state or PowerState(), []
    for i, watts in enumerate(measured):
        cap, state, events = cap_frequency(watts, state, cfg, i * tick_s, FREQS)
        out.append((cap, events))
    return out


@given(st.lists(st.none() | st.floats(0.0, 200.0), max_size=80))
def test_the_cap_never_goes_below_the_minimum(measured: list[float | None]) -> None:
    assert all(CFG.min_freq_khz <= cap <= FREQS[-1] for cap, _ in run(measured))


@given(st.lists(st.floats(60.001, 500.0), min_size=1, max_size=80), st.integers(1, 10))
def test_above_budget_the_cap_only_falls_one_step_per_interval(measured: list[float], interval: int) -> None:
    cfg = PowerConfig(step_interval_s=float(interval))
    result = run(measured, cfg)
    caps = [FREQS[-1]] + [cap for cap, _ in result]
    assert all(b in (a, LADDER[max(LADDER.index(a) - 1, 0)]) for a, b in itertools.pairwise(caps))
    step_times = [t for t, (_, events) in enumerate(result) if events]
    assert all(b - a >= interval for a, b in itertools.pairwise(step_times))
    assert len(step_times) == min(len(LADDER) - 1, (len(measured) - 1) // interval + 1)  # as fast as allowed
    assert all(e.kind == "freq_capped" for _, events in result for e in events)


@given(st.lists(st.floats(0.0, 100.0), max_size=80), st.integers(1, 4))
def test_restored_only_below_budget_minus_margin(measured: list[float], start: int) -> None:
    result = run(measured, state=PowerState(cap_khz=LADDER[start]))
    for watts, (_, events) in zip(measured, result, strict=True):
        for event in events:
            if event.kind == "freq_restored":
                assert watts < CFG.budget_w - CFG.restore_margin_w
                assert event.to_khz == LADDER[LADDER.index(event.from_khz) + 1]


def test_between_restore_and_budget_holds_and_none_holds() -> None:
    state = PowerState(cap_khz=2_000_000, last_step_t=0.0)
    assert cap_frequency(57.0, state, CFG, 100.0, FREQS) == (2_000_000, state, ())
    assert cap_frequency(None, state, CFG, 100.0, FREQS) == (2_000_000, state, ())
    cap, new, (event,) = cap_frequency(54.0, state, CFG, 100.0, FREQS)
    assert (cap, new.last_step_t, event.kind) == (2_100_000, 100.0, "freq_restored")
    cap, new, _ = cap_frequency(10.0, PowerState(cap_khz=2_300_000), CFG, 0.0, FREQS)
    assert (cap, new.cap_khz) == (2_400_000, None)  # fully restored means uncapped


def test_odd_frequency_lists() -> None:
    assert cap_frequency(99.0, PowerState(), CFG, 0.0, (600_000, 1_200_000))[0] == 1_200_000  # none above min
    assert cap_frequency(99.0, PowerState(), CFG, 0.0, (1_400_000, 1_800_000, 2_000_000))[0] == 1_800_000
    with pytest.raises(ValueError, match="available_freqs_khz is empty"):
        cap_frequency(99.0, PowerState(), CFG, 0.0, ())


@given(
    nodes=st.integers(1, 7),
    idle_w=st.floats(1.0, 4.0),
    w_per_ghz=st.floats(0.5, 4.0),
    interval_ticks=st.integers(1, 6),
    busy=st.lists(st.booleans(), min_size=1, max_size=12),
)
def test_closed_loop_never_stays_above_budget_for_long(
    nodes: int, idle_w: float, w_per_ghz: float, interval_ticks: int, busy: list[bool]
) -> None:
    """Toy chassis: power = board + nodes × (idle + k × f) while busy; load switches on and off every 30 ticks."""
    cfg = PowerConfig(step_interval_s=float(interval_ticks))

    def power(cap_khz: int, on: bool) -> float:
        return cfg.base_w + nodes * (idle_w + (w_per_ghz * cap_khz / 1e6 if on else 0.0))

    assume(power(LADDER[0], True) <= cfg.budget_w)  # the cap can bring it under budget at all
    steps = sum(power(f, True) > cfg.budget_w for f in LADDER)  # steps from the top to the first one that fits
    state, cap, above_since = PowerState(), FREQS[-1], None
    for tick in range(30 * len(busy)):
        measured = power(cap, busy[tick // 30])
        if measured > cfg.budget_w:
            above_since = tick if above_since is None else above_since
            assert tick - above_since <= steps * cfg.step_interval_s
        else:
            above_since = None
        cap, state, _ = cap_frequency(measured, state, cfg, float(tick), FREQS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_w": 0.0}, "policy.power.budget_w: expected a number above 0, got 0.0"),
        ({"node_heavy_w": 3.0}, "policy.power.node_heavy_w: expected a number at least node_idle_w"),
        ({"restore_margin_w": 60.0}, "policy.power.restore_margin_w: expected a number from 0 to below budget_w"),
        ({"step_interval_s": 0.0}, "policy.power.step_interval_s: expected a number above 0"),
    ],
)
def test_bad_power_config_names_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        PowerConfig(**kwargs)


# --- measuring the chassis ------------------------------------------------------------------------------------------

READING = st.builds(
    NodeReading,
    power_w=st.none() | st.floats(0.0, 20.0),
    busy=st.booleans(),
    t=st.floats(0.0, 100.0),
)


def test_the_input_monitor_measures_everything() -> None:
    readings = {"n1": NodeReading(5.0, False, 10.0)}
    assert chassis_power_w(readings, 42.5, CFG, 10.0, stale_after_s=5.0) == (42.5, "input")


def test_node_readings_add_up_with_estimates_for_the_silent() -> None:
    readings = {
        "n1": NodeReading(6.0, True, 10.0),  # fresh reading
        "n2": NodeReading(None, True, 10.0),  # no PMIC: busy estimate
        "n3": NodeReading(None, False, 10.0),  # no PMIC: idle estimate
        "n4": NodeReading(3.0, False, 1.0),  # silent for 9 s: may be running flat out
    }
    total, source = chassis_power_w(readings, None, CFG, 10.0, stale_after_s=5.0)
    assert source == "nodes"
    assert total == pytest.approx(CFG.base_w + 6.0 + CFG.node_heavy_w + CFG.node_idle_w + CFG.node_heavy_w)


def test_no_reading_at_all_is_unknown() -> None:
    readings = {"n1": NodeReading(None, True, 10.0), "n2": NodeReading(4.0, False, 0.0)}
    assert chassis_power_w(readings, None, CFG, 10.0, stale_after_s=5.0) == (None, "none")
    assert chassis_power_w({}, None, CFG, 10.0, stale_after_s=5.0) == (None, "none")


@given(st.dictionaries(st.sampled_from([f"n{i}" for i in range(1, 8)]), READING, max_size=7), st.floats(0.0, 100.0))
def test_a_measurement_never_counts_a_silent_node_below_its_busy_estimate(
    readings: dict[str, NodeReading], now: float
) -> None:
    total, source = chassis_power_w(readings, None, CFG, now, stale_after_s=5.0)
    if total is None:
        assert source == "none"
        return
    silent = [r for r in readings.values() if now - r.t > 5.0]
    fresh = [r.power_w for r in readings.values() if now - r.t <= 5.0 and r.power_w is not None]
    assert total >= CFG.base_w + len(silent) * CFG.node_heavy_w + sum(fresh) - 1e-9
