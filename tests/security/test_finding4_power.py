"""Issue 12, finding 4: "Power decisions trust the node field of the body, not the topic; any node login can cap every
node's frequency and block heavy jobs."

Replayed through the shipped broker config, whose ACL holds each login to its own topics: the ``evil`` node's login
publishes, on its own power topic, retained, a decision naming the real driver and then one naming itself, each
capping every node to its lowest frequency, counting every node busy and setting a 1 W budget; it cannot publish on
the driver's topic at all. The nodes keep running uncapped and still admit heavy jobs. Then ``evil`` claims the
chassis role in its own facts: a node on ``policy.power.driver = "auto"`` stops following anyone (and says so), a
node that names its driver keeps following it. The rule itself is tested without a broker in
tests/unit/test_power_trust.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker, Credentials
from nodeagent.protocol import ChassisPower, Command, Event, JobSpec, NodeFacts, Telemetry, decode, encode
from tests.conftest import AgentFactory
from tests.integration.helpers import Watcher
from tests.shipped_broker import ShippedBroker, shipped_broker
from tests.waits import wait_until

pytestmark = pytest.mark.slow

NODES = ("drv", "auto1", "named1")
DRIVER = '[hardware]\nslot = 1\n[policy.chassis]\nrole = "on"\n[policy.power]\nbudget_w = {budget}\n'
MEMBER = "[hardware]\nslot = {slot}\n"
NAMED = '[policy.power]\ndriver = "drv"\n'
HPL = {"n": 200, "nb": 32, "p": 1, "q": 1}


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShippedBroker]:
    with shipped_broker((*NODES, "evil", "operator")) as mosq:
        monkeypatch.setenv("PICLUSTER_MQTT_USERNAME", "operator")
        monkeypatch.setenv("PICLUSTER_MQTT_PASSWORD", "pw-operator")
        yield mosq


def hostile(node: str, everyone: tuple[str, ...]) -> bytes:
    """A decision that caps every node to its lowest frequency and refuses every heavy job."""
    return encode(
        ChassisPower(node, time.time(), 1.0, 500.0, "nodes", 500.0, 1_500_000, everyone, everyone, 4.0, 10.0, 3.6)
    )


def start(shipped: ShippedBroker, tmp_path: Path, cluster: str, budget: float) -> AgentFactory:
    agents = AgentFactory(tmp_path, shipped, cluster)
    agents.start("drv", config=shipped.login("drv") + DRIVER.format(budget=budget))
    agents.start("auto1", config=shipped.login("auto1") + MEMBER.format(slot=2))
    agents.start("named1", config=shipped.login("named1") + MEMBER.format(slot=3) + NAMED)
    return agents


def latest(w: Watcher, node: str) -> Telemetry:
    return decode(next(m.payload for m in reversed(w.seen) if m.topic == w.topics.telemetry(node)), Telemetry)


def answer(w: Watcher, node: str, job_id: str) -> Event:
    job = JobSpec(id=job_id, kind="hpl", params=HPL)
    w.publish(w.topics.node_cmd(node), encode(Command(id=job_id, cmd="run", job=job)))
    return w.wait(f"{node}'s answer to {job_id}", lambda: next(iter(w.events(node, job_id)), None), 30)


def cancel(w: Watcher, node: str, job_id: str) -> None:
    w.publish(w.topics.node_cmd(node), encode(Command(id=f"{job_id}.c", cmd="cancel", job_id=job_id)))
    w.wait(f"{job_id} to end", lambda: any(e.terminal for e in w.events(node, job_id)), 60)


def test_another_nodes_login_can_neither_cap_nor_block_the_chassis(
    shipped: ShippedBroker, tmp_path: Path, cluster: str
) -> None:
    agents = start(shipped, tmp_path, cluster, budget=60.0)
    evil = Link("evil", Broker.parse(shipped.url), credentials=Credentials("evil", "pw-evil"))
    try:
        with Watcher(shipped.url, cluster) as w:
            w.wait("the nodes online", lambda: w.online(*NODES), timeout_s=30)
            w.wait("the driver's decision", lambda: any(m.topic == w.topics.power("drv") for m in w.seen))
            evil.start()
            assert evil.wait_connected(10)
            everyone = (*NODES, "evil")
            attempts = [
                (w.topics.power("evil"), hostile("drv", everyone), "names drv on evil's topic"),
                (w.topics.power("evil"), hostile("evil", everyone), "evil is not the chassis power driver"),
            ]
            for topic, payload, why in attempts:  # one at a time: a node keeps only a topic's latest message
                evil.publish(topic, payload, qos=1, retain=True)
                for node in ("drv", "auto1"):  # named1 hears drv's topic alone
                    wait_until(f"{node} to refuse it", w.pump, lambda n=node, y=why: y in agents_log(agents, n), 20)
            evil.publish(w.topics.power("drv"), hostile("drv", everyone), qos=1, retain=True)  # the ACL drops it
            ticks = {n: w.telemetry_count(n) for n in NODES}
            w.wait("three more ticks", lambda: all(w.telemetry_count(n) >= ticks[n] + 3 for n in NODES))
            assert all(latest(w, n).freq_cap_mhz is None for n in NODES), [latest(w, n) for n in NODES]
            assert all(
                decode(m.payload, ChassisPower).node == "drv" for m in w.seen if m.topic == w.topics.power("drv")
            )
            for node in ("auto1", "named1"):
                event = answer(w, node, f"heavy-{node}")
                assert event.kind == "accepted", event  # not refused by evil's 1 W budget
                cancel(w, node, f"heavy-{node}")
    finally:
        evil.stop()
        agents.stop_all()


def test_a_node_claiming_the_chassis_role_stops_auto_and_not_a_named_driver(
    shipped: ShippedBroker, tmp_path: Path, cluster: str
) -> None:
    # 3.6 W of board and three idle nodes at 4 W: 15.6 W; one heavy node more (+6 W) is over a 20 W budget.
    agents = start(shipped, tmp_path, cluster, budget=20.0)
    evil = Link("evil", Broker.parse(shipped.url), credentials=Credentials("evil", "pw-evil"))
    try:
        with Watcher(shipped.url, cluster) as w:
            w.wait("the nodes online", lambda: w.online(*NODES), timeout_s=30)
            w.wait("the driver's decision over all three", lambda: set(NODES) <= set(decisions(w)[-1].nodes))
            for node in ("auto1", "named1"):  # both follow drv: its budget refuses a heavy job
                event = answer(w, node, f"before-{node}")
                assert event.kind == "rejected" and event.field == "power" and "20 W budget" in event.reason
            evil.start()
            assert evil.wait_connected(10)
            facts = NodeFacts("evil", "9", "nanocluster", "cm5", "s", 4, 4096, slot=1, roles=("chassis",))
            evil.publish(w.topics.facts("evil"), encode(facts), qos=1, retain=True)
            alert = w.wait(
                "auto1's alert",
                lambda: next((e for e in w.events("auto1") if e.data.get("power") == "driver_conflict"), None),
            )
            assert "drv, evil" in alert.message and "policy.power.driver" in alert.message
            # auto1 no longer knows its driver: nothing holds its jobs (the alert tells the operator to name it).
            event = answer(w, "auto1", "after-auto1")
            assert event.kind == "accepted", event
            cancel(w, "auto1", "after-auto1")
            # named1 names drv: evil's claim changes nothing, drv's budget still holds.
            event = answer(w, "named1", "after-named1")
            assert event.kind == "rejected" and event.field == "power" and "20 W budget" in event.reason
            assert not [e for e in w.events("named1") if e.data.get("power") == "driver_conflict"]
    finally:
        evil.stop()
        agents.stop_all()


def decisions(w: Watcher) -> list[ChassisPower]:
    """drv's decisions so far (a placeholder before its first)."""
    found = [decode(m.payload, ChassisPower) for m in w.seen if m.topic == w.topics.power("drv") and m.payload]
    return found or [ChassisPower("drv", 0.0, 0.0, None, "none", 0.0)]


def agents_log(agents: AgentFactory, node: str) -> str:
    return next(a.output() for a in agents.started if a.node == node)
