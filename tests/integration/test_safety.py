"""The node keeps itself safe with real processes: a real hpcc job frozen by the guard, the health gate, and the
operator's fan, identify and policy commands through piclusterctl."""

from __future__ import annotations

import json
import signal

import pytest

from nodeagent.protocol import Command, JobSpec, Telemetry, decode, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

# A one-core simulated node that heats fast and has lost its fan: unguarded, HPL would take it to 80 °C, past
# critical. Guarded, it runs in bursts between resume (45) and hot (50).
HOT_NODE = """
[sim]
cores = 1
time_constant_s = 3.0
idle_rise_c = 5.0
load_rise_c = 50.0
faults = ["fan_stop"]
[policy.guard]
warm_c = 40.0
warm_exit_c = 38.0
hot_c = 50.0
resume_c = 45.0
critical_c = 75.0
clear_c = 30.0
[policy.gate]
start_max_c = 40.0
"""


def telemetry(w: Watcher, node: str) -> list[Telemetry]:
    return [decode(m.payload, Telemetry) for m in w.seen if m.topic == w.topics.telemetry(node)]


@pytest.mark.slow
def test_the_guard_freezes_a_hot_job_and_lets_it_finish_cooler(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("node1", config=HOT_NODE)
    job = JobSpec(id="hot1", kind="hpl", params={"n": 3000, "nb": 128, "p": 1, "q": 1}, timeout_s=300)
    with Watcher(broker.url, cluster) as w:
        w.wait("node1 online", lambda: w.online("node1"))
        w.publish(w.topics.node_cmd("node1"), encode(Command(id="hot1", cmd="run", job=job)))
        w.wait("the job to end", lambda: any(e.terminal for e in w.events("node1", "hot1")), timeout_s=240)
    events = w.events("node1")
    assert [e.kind for e in events if e.job == "hot1"][-1] == "finished"
    samples = telemetry(w, "node1")
    assert any(t.job_frozen for t in samples), "the guard never froze the job"
    assert max(t.temp_c for t in samples if t.temp_c is not None) < 75.0
    guard = [e for e in events if e.kind == "alert" and "guard" in e.data]
    assert any(e.data["to"] == "hot" for e in guard)
    assert all(t.fan_duty_pct == 100.0 for t in samples if t.guard in ("warm", "hot"))


def test_the_health_gate_refuses_and_force_overrides(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("node1", config='[sim]\nfaults = ["aer_climb"]\n')

    def aer(w: Watcher) -> int:
        t = w.fleet.nodes["node1"].telemetry if "node1" in w.fleet.nodes else None
        return max((p.aer_correctable or 0 for p in t.pcie), default=0) if t else 0

    with Watcher(broker.url, cluster) as w:
        # Over the gate's limit (10 correctable a minute): 3 a read, so five reads. Counting ticks raced with a
        # quick piclusterctl, which could arrive after only three reads (9 errors) and be admitted.
        w.wait("node1 online with 15 AER errors", lambda: w.online("node1") and aer(w) >= 15)
    hpl = ("run", "hpl", "--per-node", "--nodes", "node1", "--json", "--param", "n=600", "--param", "nb=64")
    proc = ctl(broker, cluster, *hpl)
    node = json.loads(proc.stdout)["runs"][0]
    assert proc.returncode == 1 and node["state"] == "rejected"
    assert node["reason"].startswith("health gate: ") and "AER" in node["reason"] and "--force" in node["reason"]
    proc = ctl(broker, cluster, *hpl, "--force")
    node = json.loads(proc.stdout)["runs"][0]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node["result"]["forced"] is True and any("AER" in r for r in node["result"]["forced_reasons"])


def test_fan_identify_and_policy_commands(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("node1")
    agents.start("node2")
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("node1", "node2"))
    proc = ctl(broker, cluster, "fan", "node[1-2]", "75")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["node1: fan 75: done", "node2: fan 75: done"]
    proc = ctl(broker, cluster, "policy", "node1", "--json")
    (row,) = json.loads(proc.stdout)
    assert row["fan_mode"] == "75.0" and row["fan_duty_pct"] == 75.0
    assert row["policy"]["guard"]["critical_c"] == 85.0 and row["guard"] == "normal"
    proc = ctl(broker, cluster, "fan", "node1", "auto")
    assert proc.returncode == 0 and "node1: fan auto: done" in proc.stdout
    proc = ctl(broker, cluster, "identify", "node2")
    assert proc.returncode == 0 and proc.stdout.strip() == "node2: identify: done"
    table = ctl(broker, cluster, "policy", "all").stdout
    assert table.splitlines()[0].split()[:3] == ["NODE", "GUARD", "TEMP"] and "node2" in table
    proc = ctl(broker, cluster, "fan", "node1", "120")
    assert proc.returncode == 2 and "percent from 0 to 100" in proc.stderr


@pytest.mark.slow
def test_the_chassis_fan_follows_the_hottest_node_and_a_dead_one(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    # Five simulated NanoCluster nodes; node1 drives the chassis fan. node3 sits in a hot corner (58 °C idle).
    # The driver starts at full fan (no broker yet) and may fall fast here, so it settles on the curve in the test.
    agents.start(
        "node1",
        config='[policy.chassis]\nrole = "on"\nstale_after_s = 3.0\n[policy.fan]\nmax_fall_pct_per_s = 100.0\n',
    )
    victim = None
    for i in range(2, 6):
        hot = "[sim]\nambient_c = 46.0\n" if i == 3 else ""
        started = agents.start(f"node{i}", config=hot)
        victim = started if i == 3 else victim
    assert victim is not None
    with Watcher(broker.url, cluster) as w:
        w.wait("all five online", lambda: w.online(*(f"node{i}" for i in range(1, 6))))

        def chassis_duty() -> float | None:
            samples = telemetry(w, "node1")
            return samples[-1].fan_duty_pct if samples else None

        def settled_on_node3() -> bool:
            # Three samples in a row on node3's curve value: one sample of the start-up fall from 100 % is not it.
            last = [t.fan_duty_pct or 0.0 for t in telemetry(w, "node1")[-3:]]
            return len(last) == 3 and all(40.0 <= d <= 55.0 for d in last)

        # The curve at node3's ~58 °C (50 °C: 30 %, 60 °C: 50 %) is far above node1's own (37 °C: 0 %).
        w.wait("the chassis fan to settle on node3's heat", settled_on_node3, timeout_s=30)
        victim.stop(signal.SIGKILL)  # its will says offline: a node that may still be hot
        w.wait("full fan for the silent node", lambda: chassis_duty() == 100.0, timeout_s=15)
