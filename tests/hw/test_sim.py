"""The simulated node: its first-order thermal model, throttling, fan and faults. No sleeping: time is ``now``."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.hw import Sample, SimBackend, SimConfig, SysfsRoot
from nodeagent.hw.real import SENSORS
from nodeagent.hw.sim import SIM_SENSORS
from tests.hw.trees import DATA

QUIET = SimConfig(temp_noise_c=0.0)  # exact temperatures for the model tests


class Load:
    """A load the test can change between reads."""

    def __init__(self, cores: float = 0.0) -> None:
        self.cores = cores

    def __call__(self) -> float:
        return self.cores


def temp_at(sim: SimBackend, now: float) -> float:
    """The temperature ``sim`` reports at ``now`` (which must be readable)."""
    temp = sim.read(now).temp_c
    assert temp is not None
    return temp


def _settle(sim: SimBackend, start: float, cfg: SimConfig = QUIET) -> float:
    """Read for 20 time constants so the model reaches steady state; returns the time of the last read."""
    now = start
    for _ in range(20):
        now += cfg.time_constant_s
        sim.read(now)
    return now


def test_first_read_starts_at_idle() -> None:
    sample = SimBackend("n1", QUIET, Load(4.0)).read(1000.0)
    assert sample.temp_c == QUIET.ambient_c + QUIET.idle_rise_c
    assert sample.errors == ()


def test_temperature_rises_towards_the_target_under_load() -> None:
    load = Load(3.0)
    sim = SimBackend("n1", QUIET, load)
    target = QUIET.target_c(3.0, QUIET.fan_duty_pct)
    temps = [temp_at(sim, float(t)) for t in range(0, 200, 5)]
    # Never falls (equal only once the approach is finer than the sensor's millidegree resolution).
    assert all(a <= b for a, b in itertools.pairwise(temps))
    assert temps[0] < temps[1]
    assert temps[-1] <= target
    assert target - temps[-1] < 0.01 * (target - temps[0])  # ten time constants: within 1 % of the step


def test_temperature_falls_with_fan_duty() -> None:
    sim = SimBackend("n1", replace(QUIET, fan_duty_pct=0.0), Load(4.0))
    now = _settle(sim, 0.0)
    hot = temp_at(sim, now)
    sim.set_fan_duty(100.0)
    cooler = temp_at(sim, now + 10.0)
    now = _settle(sim, now + 10.0)
    coolest = temp_at(sim, now)
    assert hot > cooler > coolest
    assert coolest == pytest.approx(QUIET.target_c(4.0, 100.0))
    assert sim.read(now + 1).fan_duty_pct == 100.0


@given(
    st.floats(min_value=0.0, max_value=8.0),
    st.floats(min_value=0.0, max_value=8.0),
    st.floats(min_value=0.0, max_value=100.0),
)
def test_steady_state_is_monotone_in_load(a: float, b: float, duty: float) -> None:
    low, high = sorted((a, b))
    temps = []
    for load in (low, high):
        sim = SimBackend("n1", replace(QUIET, fan_duty_pct=duty), Load(load))
        sim.read(0.0)
        temps.append(temp_at(sim, _settle(sim, 0.0)))
    assert temps[0] <= temps[1]


@given(st.floats(min_value=0.0, max_value=8.0), st.floats(min_value=0.0, max_value=100.0))
def test_target_falls_with_duty(load: float, duty: float) -> None:
    assert QUIET.target_c(load, duty) >= QUIET.target_c(load, min(duty + 10.0, 100.0))


@pytest.mark.parametrize("step_s", [1.0, 5.0, 20.0])
def test_step_response_reaches_63_percent_after_one_time_constant(step_s: float) -> None:
    load = Load(0.0)
    sim = SimBackend("n1", QUIET, load)
    start = _settle(sim, 0.0)
    before = temp_at(sim, start)
    load.cores = QUIET.cores
    after = QUIET.target_c(QUIET.cores, QUIET.fan_duty_pct)
    now, temp = start, before
    while now < start + QUIET.time_constant_s - 1e-9:  # the tick rate must not change the physics
        now += step_s
        temp = temp_at(sim, now)
    fraction = (temp - before) / (after - before)
    assert fraction == pytest.approx(1.0 - math.exp(-1.0), abs=0.05)


def test_throttle_bits_above_the_soft_limit() -> None:
    # Fan off, all cores busy, warm room: target = 30 + 12 + 45 = 87 °C, past both limits.
    cfg = replace(QUIET, ambient_c=30.0, fan_duty_pct=0.0)
    sim = SimBackend("n1", cfg, Load(4.0))
    seen_soft_only = False
    now = 0.0
    for _ in range(400):
        now += 1.0
        sample = sim.read(now)
        assert sample.temp_c is not None and sample.throttled is not None and sample.freq_mhz is not None
        if sample.temp_c < cfg.soft_limit_c:
            assert sample.throttled == 0
            assert sample.freq_mhz == cfg.max_freq_mhz
        elif sample.temp_c < cfg.throttle_c:
            seen_soft_only = True
            assert sample.throttled == (1 << 3) | (1 << 19)
            assert "soft_temp_limit" in sample.throttle_names
            assert cfg.idle_freq_mhz <= sample.freq_mhz < cfg.max_freq_mhz
        else:
            assert sample.throttle_names == (
                "throttled",
                "soft_temp_limit",
                "throttled_occurred",
                "soft_temp_limit_occurred",
            )
            assert sample.freq_mhz == cfg.idle_freq_mhz
    assert seen_soft_only
    # Cooled down again, only the "occurred" bits remain, as vcgencmd shows them.
    sim.set_fan_duty(100.0)
    sample = sim.read(_settle(sim, now))
    assert sample.throttle_names == ("throttled_occurred", "soft_temp_limit_occurred")


def test_fail_sensor_makes_the_temperature_unreadable() -> None:
    sim = SimBackend("n1", QUIET, Load(1.0))
    sim.read(0.0)
    sim.fail_sensor("temperature")
    sample = sim.read(10.0)
    assert sample.temp_c is None
    assert sample.errors == ("temperature: sim:n1: unreadable (injected fault)",)
    assert sample.freq_mhz is not None  # only that sensor
    sim.fail_sensor(None)
    healed = sim.read(20.0)
    assert healed.errors == ()
    # The physics went on while the sensor was broken.
    assert healed.temp_c == pytest.approx(sim.temp_c, abs=1e-3)  # reported with millidegree resolution
    assert healed.temp_c is not None and healed.temp_c > QUIET.ambient_c + QUIET.idle_rise_c


def test_fail_sensor_names() -> None:
    assert set(SIM_SENSORS) <= set(SENSORS)
    sim = SimBackend("n1", QUIET, Load())
    with pytest.raises(ValueError, match="expected one of temperature, "):
        sim.fail_sensor("temp")


def test_a_failing_load_function_is_an_error_line() -> None:
    def broken() -> float:
        raise RuntimeError("cgroup gone")

    sample = SimBackend("n1", QUIET, broken).read(0.0)
    assert sample.errors == ("load: unexpected RuntimeError: cgroup gone",)
    assert sample.temp_c is not None


def test_fan_duty_is_validated() -> None:
    sim = SimBackend("n1", QUIET, Load())
    for bad in (-1.0, 100.5, math.nan):
        with pytest.raises(ValueError, match="fan duty"):
            sim.set_fan_duty(bad)


def test_frequency_memory_and_load_follow_the_jobs() -> None:
    load = Load(0.0)
    sim = SimBackend("n1", QUIET, load)
    idle = sim.read(0.0)
    load.cores = 2.0
    busy = sim.read(60.0)
    assert idle.freq_mhz == QUIET.idle_freq_mhz and busy.freq_mhz == QUIET.max_freq_mhz
    assert busy.mem_total_mb == idle.mem_total_mb == QUIET.memory_mb
    assert busy.mem_avail_mb is not None and idle.mem_avail_mb is not None
    assert busy.mem_avail_mb < idle.mem_avail_mb
    # load1 is the kernel's exponential average: after 60 s at 2 busy cores it is 2 * (1 - 1/e).
    assert busy.load1 == pytest.approx(2.0 * (1.0 - math.exp(-1.0)), abs=0.01)


def test_facts_are_deterministic_per_node() -> None:
    a, b = SimBackend("n1", QUIET, Load()), SimBackend("n1", QUIET, Load())
    other = SimBackend("n2", QUIET, Load())
    assert a.facts() == b.facts()
    assert a.facts().serial != other.facts().serial
    assert a.facts().board == "sim" and a.facts().cores == QUIET.cores
    assert a.facts().hostname == "n1"
    hosted = SimBackend("n1", QUIET, Load(), host_root=SysfsRoot(DATA / "cm5-nanocluster"))
    assert hosted.facts().hostname == "nc-node3"


def test_noise_is_small_and_deterministic() -> None:
    def run() -> list[float | None]:
        sim = SimBackend("n1", SimConfig(), Load(1.0))
        return [sim.read(float(t)).temp_c for t in range(0, 100, 5)]

    noisy = run()
    assert noisy == run()
    quiet = SimBackend("n1", QUIET, Load(1.0))
    for t, temp in zip(range(0, 100, 5), noisy, strict=True):
        exact = quiet.read(float(t)).temp_c
        assert temp is not None and exact is not None
        assert abs(temp - exact) <= SimConfig().temp_noise_c + 1e-3


def test_a_clock_stepped_back_reanchors_the_model() -> None:
    sim = SimBackend("n1", QUIET, Load(4.0))
    sim.read(10_000.0)
    stepped_back = temp_at(sim, 6_400.0)  # NTP moved the wall clock back an hour
    assert stepped_back == QUIET.ambient_c + QUIET.idle_rise_c  # no time passed for the model
    assert temp_at(sim, 6_420.0) > stepped_back  # and it runs on from the new clock, not an hour later


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cores": 0}, "sim.cores: expected at least 1, got 0"),
        ({"time_constant_s": 0.0}, "sim.time_constant_s: expected above 0"),
        ({"soft_limit_c": 90.0}, "sim.throttle_c: expected above soft_limit_c, got 85.0"),
        ({"fan_cooling": 1.5}, "sim.fan_cooling: expected between 0 and 1"),
    ],
)
def test_sim_config_is_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SimConfig(**change)


# --- injected faults -----------------------------------------------------------------------------------------------


def _run(backend: SimBackend, start: float, stop: float, step: float = 5.0) -> Sample:
    sample = backend.read(start)
    t = start
    while t < stop:
        t += step
        sample = backend.read(t)
    return sample


def test_a_stopped_fan_cools_nothing_and_reports_zero_rpm() -> None:
    cfg = SimConfig(temp_noise_c=0.0)
    spinning = _run(SimBackend("a", cfg, lambda: 4.0), 0.0, 300.0)
    stopped = SimBackend("b", cfg, lambda: 4.0)
    stopped.inject("fan_stop")
    hot = _run(stopped, 0.0, 300.0)
    assert hot.fan_rpm == 0 and hot.fan_duty_pct == cfg.fan_duty_pct  # told to spin, but does not
    assert hot.temp_c is not None and spinning.temp_c is not None
    assert hot.temp_c > spinning.temp_c + 10
    assert hot.temp_c == pytest.approx(cfg.target_c(4.0, 0.0), abs=1.0)


def test_sensor_fail_fault_makes_the_temperature_unreadable() -> None:
    backend = SimBackend("a", SimConfig(faults=("sensor_fail",)), lambda: 0.0)
    sample = backend.read(0.0)
    assert sample.temp_c is None and any(e.startswith("temperature:") for e in sample.errors)
    backend.inject("sensor_fail", active=False)
    assert backend.read(1.0).temp_c is not None


def test_a_vanishing_nvme_is_one_event_each_way() -> None:
    backend = SimBackend("a", SimConfig(), lambda: 0.0)
    assert backend.read(0.0).nvme[0].present and backend.read(0.0).events == ()
    backend.inject("nvme_vanish")
    gone = backend.read(1.0)
    assert [e.kind for e in gone.events] == ["nvme.lost"] and not gone.nvme[0].present
    assert backend.read(2.0).events == ()
    assert all(p.bdf != "0001:01:00.0" for p in backend.read(3.0).pcie)
    backend.inject("nvme_vanish", active=False)
    assert [e.kind for e in backend.read(4.0).events] == ["nvme.found"]


@given(st.integers(1, 40))
def test_climbing_aer_rises_every_read(reads: int) -> None:
    backend = SimBackend("a", SimConfig(faults=("aer_climb",)), lambda: 0.0)
    for i in range(reads):
        sample = backend.read(float(i))
    drive = next(p for p in sample.pcie if p.bdf == "0001:01:00.0")
    assert drive.aer.correctable == 3 * reads and drive.aer.nonfatal == reads // 5
    assert "correctable" in drive.rising


def test_power_follows_load() -> None:
    idle = SimBackend("a", SimConfig(), lambda: 0.0).read(0.0).power_w
    busy = SimBackend("b", SimConfig(), lambda: 4.0).read(0.0).power_w
    assert idle == pytest.approx(2.4) and busy == pytest.approx(9.4)


def test_unknown_fault_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sim\.faults: expected a list of fan_stop"):
        SimConfig(faults=("boom",))
