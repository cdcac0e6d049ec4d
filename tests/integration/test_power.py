"""Chassis power with real agents on a real broker: five simulated NanoCluster nodes under a power budget, the
admission of heavy jobs, and slot power through piclusterctl (slot 1's lines are gpiozero's mock pins, as on
every simulated node)."""

from __future__ import annotations

import json
import signal

import pytest

from nodeagent.protocol import ChassisPower, Command, Event, JobSpec, Telemetry, decode, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

FIVE = [f"node{i}" for i in range(1, 6)]
# node1 drives the chassis; everyone runs flat out (a burn-in the simulator carries as background load).
DRIVER = """
[hardware]
slot = 1
[policy.chassis]
role = "on"
stale_after_s = 3.0
[policy.power]
budget_w = {budget}
step_interval_s = 1.0
[sim]
background_load = {load}
"""
MEMBER = "[hardware]\nslot = {slot}\n[sim]\nbackground_load = {load}\n"
SLOT_DRIVER = """
[slot_power]
enabled = "on"
on_pulse_s = 0.2
off_pulse_s = 0.2
force_off_s = 0.5
cycle_gap_s = 0.2
"""


def telemetry(w: Watcher, node: str) -> list[Telemetry]:
    return [decode(m.payload, Telemetry) for m in w.seen if m.topic == w.topics.telemetry(node)]


def decisions(w: Watcher) -> list[ChassisPower]:
    return [decode(m.payload, ChassisPower) for m in w.seen if m.topic == w.topics.power("node1") and m.payload]


def start_chassis(agents: AgentFactory, *, budget: float, load: float, extra: str = "") -> None:
    agents.start("node1", config=DRIVER.format(budget=budget, load=load) + extra)
    for i in range(2, 6):
        agents.start(f"node{i}", config=MEMBER.format(slot=i, load=load))


@pytest.mark.slow
def test_the_budget_caps_five_busy_nodes_instead_of_exceeding_it(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    # Flat out the five draw 3.6 + 5 × 9.4 = 50.6 W; the budget is 38 W.
    start_chassis(agents, budget=38.0, load=4.0)
    with Watcher(broker.url, cluster) as w:
        w.wait("all five online", lambda: w.online(*FIVE))

        def chassis_w() -> list[float]:
            """The chassis power as the driver measured it, latest last."""
            return [d.measured_w for d in decisions(w) if d.measured_w is not None]

        w.wait("the driver to see the chassis over budget", lambda: any(m > 38.0 for m in chassis_w()), timeout_s=30)
        w.wait(
            "three decisions in a row within the budget",
            lambda: len(chassis_w()) >= 3 and all(m <= 38.0 for m in chassis_w()[-3:]),
            timeout_s=60,
        )
        last = decisions(w)[-1]
        assert last.source == "nodes" and last.cap_khz < 2_400_000 and set(last.nodes) == set(FIVE)
        w.wait("every node to apply the cap", lambda: all(telemetry(w, n)[-1].freq_cap_mhz for n in FIVE))
        for node in FIVE:
            t = telemetry(w, node)[-1]
            assert t.freq_mhz is not None and t.freq_cap_mhz is not None and t.freq_mhz <= t.freq_cap_mhz
        steps = [e for e in w.events("node1") if e.kind == "alert" and e.data.get("power") == "freq_capped"]
        assert steps and all(e.data["from_khz"] - e.data["to_khz"] == 100_000 for e in steps)
    (row,) = json.loads(ctl(broker, cluster, "policy", "node3", "--json").stdout)
    assert row["freq_cap_mhz"] is not None and row["power_budget"]["node"] == "node1"
    assert row["power_budget"]["budget_w"] == 38.0 and "node3" in row["power_budget"]["nodes"]
    table = ctl(broker, cluster, "policy", "all").stdout
    assert "CAP" in table.splitlines()[0] and "chassis of node1: " in table and "of 38 W budget" in table


def test_heavy_jobs_are_admitted_by_the_budget_and_force_overrides(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    # 3.6 W of board and five idle nodes at 4 W: 23.6 W. One heavy node more makes 29.6 W, over a 25 W budget.
    start_chassis(agents, budget=25.0, load=0.0)
    with Watcher(broker.url, cluster) as w:
        w.wait("all five online", lambda: w.online(*FIVE))
        w.wait("the driver's decision", lambda: decisions(w) and set(decisions(w)[-1].nodes) == set(FIVE))
    args = ("run", "hpl", "--nodes", "node[2-3]", "--json", "--param", "n=400", "--param", "nb=64")
    proc = ctl(broker, cluster, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "power budget: chassis of node1:" in proc.stderr and "25 W budget" in proc.stderr
    assert "--force" in proc.stderr
    stress = ctl(broker, cluster, "run", "stress", "--nodes", "node[2-3]", "--set", "duration_s=5")
    assert stress.returncode == 2 and "power budget: chassis of node1:" in stress.stderr  # every heavy kind
    # A node judges for itself too (a job sent by anything but piclusterctl): rejected with field "power".
    with Watcher(broker.url, cluster) as w:
        job = JobSpec(id="direct1", kind="hpl", params={"n": 400, "nb": 64, "p": 1, "q": 1})
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="direct1", cmd="run", job=job)))
        w.wait("the node's answer", lambda: any(e.terminal for e in w.events("node2", "direct1")))
        (answer,) = [e for e in w.events("node2", "direct1") if e.terminal]
        assert answer.kind == "rejected" and answer.field == "power" and "29.6 W" in answer.reason
    proc = ctl(broker, cluster, *args[:3], "node2", *args[4:], "--force", "--per-node")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["runs"][0]["result"]
    assert result["forced"] is True and any("budget" in r for r in result["forced_reasons"])


def test_slot_power_through_piclusterctl(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    start_chassis(agents, budget=60.0, load=0.0, extra=SLOT_DRIVER)
    with Watcher(broker.url, cluster) as w:
        w.wait("all five online", lambda: w.online(*FIVE))
    proc = ctl(broker, cluster, "power", "cycle", "node[3-4]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["node3: power cycle (slot 3): done", "node4: power cycle (slot 4): done"]
    proc = ctl(broker, cluster, "power", "off", "node5", "--force")
    assert proc.returncode == 0 and "node5: power force-off (slot 5): done" in proc.stdout
    proc = ctl(broker, cluster, "power", "on", "node2")  # online: an "on" pulse would shut it down
    assert proc.returncode == 1 and "node2 in slot 2 is online" in proc.stderr
    proc = ctl(broker, cluster, "power", "cycle", "node1")  # the switcher's own slot
    assert proc.returncode == 1 and "slot 1 is this node (node1)" in proc.stderr
    proc = ctl(broker, cluster, "power", "on", "node9")
    assert proc.returncode == 2


@pytest.mark.slow
def test_a_node_that_stays_offline_is_cycled_with_back_off_then_left_alone(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    auto = "[policy.auto_cycle]\nenabled = true\noffline_after_s = 2.0\nbackoff_s = 2.0\nmax_tries = 2\n"
    agents.start("node1", config=DRIVER.format(budget=60.0, load=0.0) + SLOT_DRIVER + auto)
    victim = agents.start("node3", config=MEMBER.format(slot=3, load=0.0))
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("node1", "node3"))
        victim.stop(signal.SIGKILL)  # its will fires; the simulated module never comes back

        def auto_events() -> list[Event]:
            return [
                e for e in w.events("node1") if e.kind == "alert" and str(e.data.get("power", "")).startswith("auto_")
            ]

        w.wait("two tries and giving up", lambda: any(e.data["power"] == "auto_give_up" for e in auto_events()), 60)
        got = auto_events()
    assert [(e.data["power"], e.data["attempt"]) for e in got] == [
        ("auto_cycle", 1),
        ("auto_cycle", 2),
        ("auto_give_up", 2),
    ]
    assert all(e.data["slot"] == 3 and e.data["node"] == "node3" for e in got)
    assert got[1].t - got[0].t >= 1.9 and got[2].t - got[1].t >= 3.9  # 2 s, then 4 s of back-off
