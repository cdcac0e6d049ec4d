"""Health gate: a clean node is admitted; each reason alone refuses, in words; force admits and keeps reasons."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.policy.config import GateConfig
from nodeagent.policy.health_gate import AerIncrease, HealthInput, admit_job, refusal_reasons

CFG = GateConfig()
CLEAN = HealthInput(temp_c=45.0, throttled=0, nvme_critical_warning=0, aer=(AerIncrease("0001:01:00.0"),))

ALONE = {
    "under-voltage": HealthInput(45.0, throttled=0x1),
    "frequency capped": HealthInput(45.0, throttled=0x2),
    "throttled now": HealthInput(45.0, throttled=0x4),
    "soft temperature limit": HealthInput(45.0, throttled=0x8),
    "spare capacity": HealthInput(45.0, nvme_critical_warning=0x01),
    "NVMe critical warning: temperature": HealthInput(45.0, nvme_critical_warning=0x02),
    "reliability degraded": HealthInput(45.0, nvme_critical_warning=0x04),
    "read-only": HealthInput(45.0, nvme_critical_warning=0x08),
    "volatile-memory backup": HealthInput(45.0, nvme_critical_warning=0x10),
    "critical-warning bit 5": HealthInput(45.0, nvme_critical_warning=0x20),
    "1 new fatal AER": HealthInput(45.0, aer=(AerIncrease("0001:01:00.0", fatal=1),)),
    "2 new non-fatal AER": HealthInput(45.0, aer=(AerIncrease("0001:01:00.0", nonfatal=2),)),
    "correctable AER errors rising at 11.0/min": HealthInput(45.0, aer=(AerIncrease("0001:01:00.0", correctable=11),)),
    "above the 65 °C start limit": HealthInput(65.1),
    "temperature cannot be read": HealthInput(None),
    "thermal guard refuses heavy": HealthInput(45.0, guard_refuses_heavy=True),
}


def test_a_clean_node_is_admitted() -> None:
    assert admit_job(CLEAN, CFG, heavy=True, force=False) == admit_job(CLEAN, CFG, heavy=False, force=False)
    result = admit_job(CLEAN, CFG, heavy=True, force=False)
    assert result.admitted and result.reasons == () and not result.forced


@pytest.mark.parametrize("words", list(ALONE))
def test_each_reason_alone_refuses_and_is_named(words: str) -> None:
    result = admit_job(ALONE[words], CFG, heavy=True, force=False)
    assert not result.admitted and not result.forced
    assert len(result.reasons) == 1 and words in result.reasons[0], result.reasons


def test_the_guard_only_refuses_heavy_jobs() -> None:
    assert admit_job(HealthInput(45.0, guard_refuses_heavy=True), CFG, heavy=False, force=False).admitted


@pytest.mark.parametrize(
    "health",
    [
        HealthInput(45.0, throttled=0xF0000),  # only the sticky "has occurred" bits
        HealthInput(65.0),  # at the limit, not above it
        HealthInput(45.0, aer=(AerIncrease("a", correctable=10),)),  # 10 a minute is the limit itself
        HealthInput(45.0, aer=(AerIncrease("a", correctable=-5, fatal=-1),)),  # counters reset
    ],
)
def test_not_reasons(health: HealthInput) -> None:
    assert admit_job(health, CFG, heavy=True, force=False).admitted


def test_every_reason_is_listed() -> None:
    health = HealthInput(90.0, throttled=0x5, nvme_critical_warning=0x2, guard_refuses_heavy=True)
    assert len(admit_job(health, CFG, heavy=True, force=False).reasons) == 5


def test_correctable_rate_uses_the_interval() -> None:
    slow = HealthInput(45.0, aer=(AerIncrease("a", correctable=20, interval_s=300.0),))  # 4 a minute
    fast = HealthInput(45.0, aer=(AerIncrease("a", correctable=1, interval_s=0.0),))
    assert admit_job(slow, CFG, heavy=True, force=False).admitted
    assert not admit_job(fast, CFG, heavy=True, force=False).admitted


health_inputs = st.builds(
    HealthInput,
    temp_c=st.none() | st.floats(20.0, 100.0),
    throttled=st.none() | st.integers(0, 0xFFFFF),
    nvme_critical_warning=st.none() | st.integers(0, 0xFF),
    aer=st.lists(
        st.builds(AerIncrease, st.just("0001:01:00.0"), st.integers(-5, 50), st.integers(-1, 2), st.integers(-1, 2)),
        max_size=2,
    ).map(tuple),
    guard_refuses_heavy=st.booleans(),
)


@given(health_inputs, st.booleans())
def test_force_always_admits_and_keeps_the_reasons(health: HealthInput, heavy: bool) -> None:
    plain = admit_job(health, CFG, heavy=heavy, force=False)
    forced = admit_job(health, CFG, heavy=heavy, force=True)
    assert forced.admitted and forced.reasons == plain.reasons == refusal_reasons(health, CFG, heavy=heavy)
    assert forced.forced == bool(plain.reasons) and plain.admitted == (not plain.reasons)


def test_bad_gate_config_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("policy.gate.aer_correctable_per_min: expected a number at least 0")
    ):
        GateConfig(aer_correctable_per_min=-1.0)
