"""Chassis fan: follows the hottest fresh node; stale telemetry, a lost broker or any failure means full."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.policy.chassis import ChassisSelf, ChassisState, NodeHeat, chassis_duty
from nodeagent.policy.config import ChassisConfig, PolicyConfig
from nodeagent.policy.fan import FULL_PCT, curve_duty

CFG = PolicyConfig()
OWN = ChassisSelf(temp_c=40.0, broker_connected=True)
cool = st.floats(20.0, CFG.guard.warm_c - 0.01)


@given(st.lists(st.dictionaries(st.sampled_from(["n2", "n3", "n4", "n5"]), cool, max_size=4), min_size=1, max_size=20))
def test_duty_is_at_least_the_hottest_fresh_nodes_curve_duty(ticks: list[dict[str, float]]) -> None:
    state = ChassisState()
    for i, temps in enumerate(ticks):
        now = 10.0 * i  # a tick of at least a second: the rise limit lets the duty reach any target
        nodes = {name: NodeHeat(temp, t=now - 1.0) for name, temp in temps.items()}
        duty, reasons, state = chassis_duty(nodes, OWN, CFG, state, now)
        hottest = max([OWN.temp_c, *temps.values()])
        assert duty >= curve_duty(hottest, CFG.fan) - 1e-9
        assert reasons[0].startswith("hottest: ")


def test_follows_the_curve_of_the_hottest_and_names_it() -> None:
    nodes = {"n2": NodeHeat(55.0, t=99.0), "n3": NodeHeat(52.0, t=99.0)}
    duty, reasons, _ = chassis_duty(nodes, OWN, CFG, ChassisState(), 100.0)
    assert duty == pytest.approx(40.0) and reasons == ("hottest: n2 at 55.0 °C (fan curve)",)


@given(st.floats(CFG.chassis.stale_after_s + 0.001, 1e6), cool)
def test_a_stale_node_counts_as_hot(age_s: float, temp: float) -> None:
    nodes = {"n2": NodeHeat(30.0, t=1e6), "n3": NodeHeat(temp, t=1e6 - age_s)}
    duty, reasons, _ = chassis_duty(nodes, OWN, CFG, ChassisState(), 1e6)
    assert duty == FULL_PCT and len(reasons) == 1 and reasons[0].startswith("n3: telemetry")


@given(st.dictionaries(st.sampled_from(["n2", "n3"]), st.builds(NodeHeat, cool, st.floats(0.0, 100.0))), cool)
def test_broker_lost_is_full(nodes: dict[str, NodeHeat], own_c: float) -> None:
    own = ChassisSelf(temp_c=own_c, broker_connected=False, mode=20.0)
    duty, reasons, _ = chassis_duty(nodes, own, CFG, ChassisState(), 100.0)
    assert duty == FULL_PCT and reasons == ("broker lost: the other nodes' temperatures are unknown",)


@pytest.mark.parametrize(
    ("nodes", "own", "words"),
    [
        ({"n2": NodeHeat(None, t=99.0)}, OWN, "n2: temperature unreadable"),
        ({"n2": NodeHeat(50.0, t=99.0, fan_full=True)}, OWN, "n2: its thermal guard asks for full fan"),
        ({"n2": NodeHeat(71.0, t=99.0)}, OWN, "n2 at 71.0 °C, at or above warm_c (70 °C)"),
        ({}, ChassisSelf(temp_c=None, broker_connected=True), "own temperature unreadable"),
        ({}, ChassisSelf(temp_c=40.0, broker_connected=True, fan_full=True), "own thermal guard asks for full fan"),
    ],
)
def test_every_failure_is_full(nodes: dict[str, NodeHeat], own: ChassisSelf, words: str) -> None:
    duty, reasons, _ = chassis_duty(nodes, own, CFG, ChassisState(), 100.0)
    assert duty == FULL_PCT and reasons == (words,)


def test_operator_mode_unless_forced() -> None:
    own = ChassisSelf(temp_c=40.0, broker_connected=True, mode=35.0)
    duty, reasons, _ = chassis_duty({"n2": NodeHeat(60.0, t=99.0)}, own, CFG, ChassisState(), 100.0)
    assert duty == 35.0 and "operator's fixed duty" in reasons[0]
    duty, _, _ = chassis_duty({"n2": NodeHeat(60.0, t=80.0)}, own, CFG, ChassisState(), 100.0)
    assert duty == FULL_PCT


def test_hysteresis_carries_over_between_ticks() -> None:
    _, _, state = chassis_duty({"n2": NodeHeat(60.0, t=0.0)}, OWN, CFG, ChassisState(), 0.0)
    duty, _, _ = chassis_duty({"n2": NodeHeat(57.0, t=100.0)}, OWN, CFG, state, 100.0)
    assert duty == pytest.approx(50.0)  # 3 °C below the anchor: held


def test_bad_chassis_config_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("policy.chassis.stale_after_s: expected a number above 0, got 0.0")
    ):
        ChassisConfig(stale_after_s=0.0)
