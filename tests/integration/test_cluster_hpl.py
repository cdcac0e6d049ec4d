"""`piclusterctl run hpl` over several simulated nodes on loopback: one real hpcc under one mpirun, whose remote
daemons the agents launch through the broker (no SSH)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.jobs.runner import _signal_session
from nodeagent.protocol import Command, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto, ctl, paho_env
from tests.integration.helpers import Watcher
from tests.mpi_recorded import member_line
from tests.signing import OperatorKey

pytestmark = pytest.mark.slow

CTL = [sys.executable, "-m", "controller.cli"]
LAUNCHER = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n'
SICK = "[policy.gate]\nstart_max_c = 25.0\n"  # a simulated node idles near 37 °C: the health gate refuses it


def wait_online(broker: Mosquitto, cluster: str, *nodes: str) -> None:
    with Watcher(broker.url, cluster) as w:
        w.wait(f"{nodes} online", lambda: w.online(*nodes))


def test_one_hpl_over_two_nodes_launched_by_the_agents(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey
) -> None:
    """Signed, as a real fleet runs: the operator's run command, and the launch the leader's agent signs with its
    own key for the member, which accepts that key (named in the operator's job) for this job only."""
    agents.start("node1", paho="2.x", config=LAUNCHER + operator.config())
    agents.start("node2", paho="1.6", config=LAUNCHER + SICK + operator.config())  # gate refuses it
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("node1", "node2"))

    args = ("run", "hpl", "--nodes", "node[1-2]", "--json", "--param", "n=1200", "--param", "nb=96", "--force")
    proc = ctl(broker, cluster, *args)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["state"] == "passed" and out["mode"] == "cluster"
    assert "plan: N=1200 NB=96 grid 1 x 2 = 2 rank(s) over 2 node(s)" in proc.stderr  # shown before the run
    assert (out["n"], out["nb"], out["p"], out["q"]) == (1200, 96, 1, 2)
    assert out["nodes"] == ["node1", "node2"] and out["leader"] == "node1" and out["ranks"] == 2
    assert out["gflops"] > 0.1 and out["residual"] < 16.0
    member = out["runs"][1]
    assert member["node"] == "node2" and member["state"] == "finished" and member["result"]["role"] == "member"
    launch = agents.tmp_path / "node2" / "control" / out["job"] / "launch.json"
    assert json.loads(launch.read_text())["argv"][0] == "orted"  # node2 really hosted an MPI daemon
    assert not (agents.tmp_path / "node2" / "jobs" / out["job"] / "launch.json").exists()  # not where the job writes
    assert out["plan"]["smallest_node"] in ("node1", "node2") and out["plan"]["ranks_per_node"] == 1
    assert set(out["throttled"]) == {"node1", "node2"}
    assert out["telemetry"]["node1"] and out["telemetry"]["node2"]  # both nodes' telemetry recorded with the job
    # --force reached every node; what it overrode is in the cluster's result, by node, as in a per-node result.
    assert out["forced"] is True and out["forced_reasons"]
    assert out["forced_reasons"] == [r for r in out["forced_reasons"] if r.startswith("node2: ")]
    assert any("above the 25 °C start limit" in r for r in out["forced_reasons"]), out["forced_reasons"]


def test_a_member_refuses_launches_that_are_not_its_leaders_mpi_daemon(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    agents.start("node2", config=LAUNCHER)
    wait_online(broker, cluster, "node2")
    job = JobSpec(id="j-member", kind="hpl", node_params={"node2": {"role": "member", "leader": "node1"}})
    marker = tmp_path / "pwned"
    orted = tuple(member_line(f"{sys.executable} -m nodeagent.mpi.launcher"))  # Open MPI's own, recorded
    foreign = member_line(f"{sys.executable} -m nodeagent.mpi.launcher", hnp="1100087296.0;tcp://203.0.113.9:4444")
    forged = {
        "bash": ("node1", ("bash", "-c", f"touch {marker}"), "only Open MPI's daemon"),
        "other": ("node3", orted, "only the job's leader node1"),
        "fork": ("node1", (*orted, "-mca", "orte_fork_agent", "/bin/sh"), "start every process through a program"),
        "plugins": ("node1", (*orted, "-mca", "mca_base_component_path", str(tmp_path)), "load Open MPI components"),
        "hnp": ("node1", tuple(foreign), "none of which is the leader node1's address"),
        "cmd-topic": ("node1", orted, "a launch request must come on"),  # not on the launch topic
        "claimed": ("node1", orted, "a launch request must come on"),  # node3's topic, node1's name
    }
    on_topic = {"cmd-topic": ("cmd", ""), "claimed": ("launch", "node3")}  # else the launch topic of the sender
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="j-member", cmd="run", job=job)))
        w.wait("the member holding", lambda: any(e.kind == "started" for e in w.events("node2", "j-member")))
        for name, (sender, argv, _) in forged.items():
            cmd = Command(id=f"j-member.{name}", cmd="launch", job_id="j-member", argv=argv, sender=sender)
            leaf, by = on_topic.get(name, ("launch", sender))
            topic = w.topics.node_cmd("node2") if leaf == "cmd" else w.topics.launch("node2", by)
            w.publish(topic, encode(cmd))
        w.wait("every refusal", lambda: len([e for e in w.events("node2") if e.kind == "rejected"]) == len(forged))
        # Held for the job: another job is refused while the member waits for its daemon.
        other = JobSpec(id="j-other", kind="hpl", params={"n": 600, "nb": 64, "p": 1, "q": 1})
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="j-other", cmd="run", job=other)))
        busy = w.wait("j-other refused", lambda: [e for e in w.events("node2", "j-other") if e.kind == "rejected"])
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="j-member.c", cmd="cancel", job_id="j-member")))
        w.wait("released", lambda: any(e.kind == "cancelled" for e in w.events("node2", "j-member")))
    for name, (_, _, why) in forged.items():
        (event,) = w.events("node2", f"j-member.{name}")
        assert event.kind == "rejected" and why in event.reason
    assert "busy with job j-member" in busy[0].reason
    assert not marker.exists()
    assert not (agents.tmp_path / "node2" / "control" / "j-member" / "launch.json").exists()


def test_a_member_lets_go_when_its_leaders_will_fires(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    leader = agents.start("node1", config=LAUNCHER)
    agents.start("node2", config=LAUNCHER)
    wait_online(broker, cluster, "node1", "node2")
    job = JobSpec(id="j-orphan", kind="hpl", node_params={"node2": {"role": "member", "leader": "node1"}})
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="j-orphan", cmd="run", job=job)))
        w.wait("the member holding", lambda: any(e.kind == "started" for e in w.events("node2", "j-orphan")))
        leader.stop(signal.SIGKILL)  # no controller needed: the member sees the leader's will itself
        cancelled = w.wait(
            "the member released", lambda: [e for e in w.events("node2", "j-orphan") if e.kind == "cancelled"], 30
        )
    assert cancelled[0].reason == "the job's leader node1 went offline"


def test_the_leader_dying_fails_the_job_naming_it(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    leader = agents.start("node1", config=LAUNCHER)
    agents.start("node2", config=LAUNCHER)
    wait_online(broker, cluster, "node1", "node2")
    argv = [*CTL, "--broker", broker.url, "--cluster", cluster, "run", "hpl", "--nodes", "node[1-2]", "--json"]
    argv += ["--param", "n=6000", "--param", "nb=128"]
    with Watcher(broker.url, cluster) as w:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=paho_env(None))
        try:
            started = w.wait("the leader's mpirun", lambda: [e for e in w.events("node1") if e.kind == "started"], 60)
            killed = time.monotonic()
            leader.stop(signal.SIGKILL)
            _signal_session(started[0].data["pid"], signal.SIGKILL)  # no cgroup here: the node's processes too
            stdout, stderr = proc.communicate(timeout=60)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        w.wait("node2 released", lambda: any(e.kind == "cancelled" for e in w.events("node2", started[0].job)), 30)
    out = json.loads(stdout)
    assert proc.returncode == 1, stderr
    assert out["state"] == "failed" and out["failed_node"] == "node1" and "node1 offline" in out["reason"]
    assert took < 30
