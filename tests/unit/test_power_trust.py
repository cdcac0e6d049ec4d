"""Whose power decisions a node applies (issue 12, finding 4): the driver's only, from its own topic, naming itself.

A node's login can publish only on its own topics (the broker's ACL), so the topic is what is vouched for; the body's
``node`` is a claim. These tests hold the rule on one node's ``PowerBudget`` over simulated time; the replay through
a broker with logins is tests/security/test_finding4_power.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.hw import SimBackend, SimConfig
from nodeagent.node.chassis_power import MAX_CLAIMANTS, PowerBudget
from nodeagent.policy import PolicyConfig, PowerConfig
from nodeagent.protocol import ChassisPower

NAMES = st.sampled_from(["drv", "n2", "n3", "evil", "victim"])


def decision(node: str, cap_khz: int = 1_500_000, budget_w: float = 1.0) -> ChassisPower:
    """A decision that would cap every node and refuse every heavy job, were it trusted."""
    nodes = ("drv", "n2", "n3", "evil", "victim")
    return ChassisPower(
        *(node, 0.0, budget_w, 50.0, "nodes", 50.0),
        cap_khz=cap_khz,
        busy=nodes,
        nodes=nodes,
        node_idle_w=4.0,
        node_heavy_w=10.0,
        base_w=3.6,
    )


class Node:
    def __init__(self, driver: str = "auto", *, drives: bool = False, name: str = "victim") -> None:
        self.alerts: list[dict[str, Any]] = []
        policy = PolicyConfig(power=PowerConfig(driver=driver))
        sim = SimBackend(name, SimConfig(), lambda: 0.0)
        self.budget = PowerBudget(name, policy, sim, driver=drives, emit=self.emit)

    def emit(self, kind: str, job: str = "", **fields: Any) -> None:
        self.alerts.append({"kind": kind, **fields})

    @property
    def capped(self) -> bool:
        return self.budget.apply() is not None

    @property
    def admits_heavy(self) -> bool:
        return self.budget.admit(force=False).admitted


def test_a_named_driver_is_followed_and_nobody_else() -> None:
    node = Node("drv")
    assert not node.budget.received("evil", decision("evil"))  # a node's own topic, but not the driver
    assert not node.budget.received("evil", decision("drv"))  # the driver's name in the body, on evil's topic
    assert not node.capped and node.admits_heavy
    node.budget.facts("evil", ("chassis",), 0.0)  # claiming the role changes nothing with a named driver
    assert not node.budget.received("evil", decision("evil")) and not node.capped
    assert node.budget.received("drv", decision("drv"))
    assert node.capped and not node.admits_heavy
    node.budget.driver_gone("drv")
    assert not node.capped


def test_auto_follows_the_one_node_whose_facts_claim_the_chassis() -> None:
    node = Node()
    assert not node.budget.received("drv", decision("drv"))  # nobody claims the role yet
    node.budget.facts("drv", ("chassis", "slot-power"), 0.0)
    assert node.budget.trusted == "drv"
    assert node.budget.received("drv", decision("drv")) and node.capped
    assert not node.budget.received("n2", decision("drv"))  # the driver's body on another node's topic
    node.budget.facts("n2", ("slot-power",), 1.0)  # another node, no chassis role: nothing changes
    assert node.budget.trusted == "drv" and node.capped


def test_two_claimants_cancel_out_with_one_alert_and_the_rest_recovers() -> None:
    node = Node()
    node.budget.facts("drv", ("chassis",), 0.0)
    assert node.budget.received("drv", decision("drv")) and node.capped
    node.budget.facts("evil", ("chassis",), 1.0)  # a node's login claims the role for its own node
    assert node.budget.trusted is None and not node.capped and node.admits_heavy
    assert not node.budget.received("evil", decision("evil")) and not node.budget.received("drv", decision("drv"))
    (alert,) = [a for a in node.alerts if a["kind"] == "alert"]
    assert "drv, evil" in alert["message"] and "policy.power.driver" in alert["message"]
    node.budget.facts("evil", (), 2.0)  # evil stops claiming (or is forgotten)
    node.budget.facts("evil", ("chassis",), 3.0)  # and claims again at once: no second alert this soon
    assert len([a for a in node.alerts if a["kind"] == "alert"]) == 1
    node.budget.facts("evil", (), 4.0)
    assert node.budget.trusted == "drv" and node.budget.received("drv", decision("drv")) and node.capped


def test_a_driver_applies_its_own_decisions_only() -> None:
    node = Node(drives=True, name="drv")
    node.budget.facts("evil", ("chassis",), 0.0)
    assert node.budget.trusted == "drv" and not node.budget.received("evil", decision("evil"))
    assert node.budget.received("drv", decision("drv")) and node.capped  # its own retained one, after a restart


def test_the_claimant_list_is_bounded() -> None:
    node = Node()
    for i in range(10 * MAX_CLAIMANTS):
        node.budget.facts(f"fake{i}", ("chassis",), float(i))
    assert len(node.budget.claimants) == MAX_CLAIMANTS and node.budget.trusted is None
    assert len(node.budget.decisions) <= 1


def test_light_jobs_wait_only_while_the_chassis_measures_over_budget() -> None:
    node = Node("drv")
    within = replace(decision("drv", cap_khz=0, budget_w=50.0), measured_w=40.0)
    assert node.budget.received("drv", within)
    assert node.budget.admit(force=False, heavy=False).admitted
    assert not node.budget.admit(force=False, heavy=True).admitted  # 3.6 + five busy nodes at 10 W: over 50 W
    over = replace(within, measured_w=51.5)
    assert node.budget.received("drv", over)
    light = node.budget.admit(force=False, heavy=False)
    assert not light.admitted and "51.5 W, over its 50 W budget" in light.reasons[0]
    forced = node.budget.admit(force=True, heavy=False)
    assert forced.admitted and forced.forced


def test_driver_must_be_auto_or_a_node_id() -> None:
    with pytest.raises(ConfigError, match=r"policy.power.driver: expected \"auto\" or a node id"):
        PowerConfig(driver="node 1/#")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["power", "facts", "gone"]), NAMES, NAMES, st.booleans()), max_size=30))
def test_no_sequence_of_messages_from_other_nodes_moves_a_named_drivers_follower(
    steps: list[tuple[str, str, str, bool]],
) -> None:
    """Whatever every node but the driver publishes on its own topics, in any order, nothing is applied."""
    node = Node("drv")
    for t, (what, topic_node, body_node, chassis) in enumerate(steps):
        if topic_node == "drv":
            continue  # the driver's own topic: only the driver's login can publish there
        if what == "power":
            assert not node.budget.received(topic_node, decision(body_node))
        elif what == "facts":
            node.budget.facts(topic_node, ("chassis",) if chassis else (), float(t))
        else:
            node.budget.driver_gone(topic_node)
        assert not node.capped and node.admits_heavy
