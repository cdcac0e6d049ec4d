"""`piclusterctl run hpl` end to end: real broker, simulated agents as processes, real hpcc under Open MPI."""

from __future__ import annotations

import json
import signal
import time

import pytest

from nodeagent.protocol import Command, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow


def wait_online(broker: Mosquitto, cluster: str, *nodes: str) -> None:
    with Watcher(broker.url, cluster) as w:
        w.wait(f"{nodes} online", lambda: w.online(*nodes))


def test_three_nodes_each_pass_a_real_hpl_run(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    for i, paho in enumerate(("1.6", "2.x", "1.6"), start=1):
        agents.start(f"node{i}", paho=paho)
    wait_online(broker, cluster, "node1", "node2", "node3")

    proc = ctl(
        broker, cluster, "run", "hpl", "--per-node", "--nodes", "all", "--json", "--param", "n=1200", "--param", "nb=96"
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["state"] == "passed" and out["mode"] == "per-node"
    assert [n["node"] for n in out["runs"]] == out["nodes"] == ["node1", "node2", "node3"]
    for node in out["runs"]:
        r = node["result"]
        assert node["state"] == "finished" and node["passed"]
        assert (r["n"], r["nb"], r["p"], r["q"]) == (1200, 96, 1, 1)  # what hpcc really ran, not what we asked
        assert r["gflops"] > 0.1 and r["residual"] < 16.0 and r["passed"] is True
    assert out["gflops"] == pytest.approx(sum(n["result"]["gflops"] for n in out["runs"]))


def test_node_set_and_table_output(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("node1")
    agents.start("node2")
    wait_online(broker, cluster, "node1", "node2")
    proc = ctl(
        broker, cluster, "run", "hpl", "--per-node", "--nodes", "node[2]", "--param", "n=800", "--param", "nb=64"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "RESULT", "GFLOPS"]
    assert lines[1].split()[:2] == ["node2", "PASSED"]
    assert "node1" not in proc.stdout
    assert lines[-1].startswith("total:") and "1/1 node(s) passed" in lines[-1]


def test_unknown_node_and_bad_param_are_usage_errors(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("node1")
    wait_online(broker, cluster, "node1")
    proc = ctl(broker, cluster, "run", "hpl", "--nodes", "node[1-2]")
    assert proc.returncode == 2 and "unknown node(s) node2" in proc.stderr
    proc = ctl(broker, cluster, "run", "hpl", "--nodes", "node[1-2")
    assert proc.returncode == 2 and "missing bracket" in proc.stderr
    proc = ctl(broker, cluster, "run", "hpl", "--nodes", "all", "--param", "nbb=128")
    assert proc.returncode == 2 and "nbb" in proc.stderr and "nb" in proc.stderr


def test_hpcc_fallback_to_other_sizes_fails_the_job(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    # A 2x2 grid on a node that runs 1 rank per grid cell is fine; asking 2x2 while mpirun starts 4 ranks is fine
    # too. So make hpcc fall back the way operators hit it: a grid larger than the ranks started. mpirun is given
    # -np from P*Q, so we force the mismatch with an mpirun wrapper that always starts 1 rank.
    wrapper = agents.tmp_path / "mpirun-1"
    wrapper.write_text("#!/bin/sh\nexec mpirun --bind-to none --oversubscribe -np 1 -x OPENBLAS_NUM_THREADS hpcc\n")
    wrapper.chmod(0o755)
    agents.start("node1", config=f'mpirun = "{wrapper}"\nmpirun_args = []\n')
    wait_online(broker, cluster, "node1")
    proc = ctl(
        broker,
        cluster,
        "run",
        "hpl",
        "--per-node",
        "--nodes",
        "node1",
        "--json",
        "--param",
        "n=1000",
        "--param",
        "p=1",
        "--param",
        "q=2",
    )
    assert proc.returncode == 1
    node = json.loads(proc.stdout)["runs"][0]
    assert node["state"] == "failed"
    assert "asked for N=1000" in node["reason"] and "fell back" in node["reason"]


def test_missing_binary_is_rejected_with_the_fix(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("node1", config='hpcc = "/nonexistent/hpcc"\n')
    wait_online(broker, cluster, "node1")
    proc = ctl(broker, cluster, "run", "hpl", "--per-node", "--nodes", "node1", "--json", "--param", "n=1000")
    assert proc.returncode == 1
    node = json.loads(proc.stdout)["runs"][0]
    assert node["state"] == "rejected"
    assert "/nonexistent/hpcc not found" in node["reason"] and "apt install" in node["reason"]


def test_a_node_that_dies_mid_job_ends_it_fast(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    victim = agents.start("node1")
    wait_online(broker, cluster, "node1")
    job = JobSpec(id="j-die", kind="hpl", node_params={"node1": {"n": 6000, "nb": 128, "p": 1, "q": 1}})
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.cluster_cmd(), encode(Command(id="j-die", cmd="run", nodes=("node1",), job=job)))
        started = w.wait("job started", lambda: [e for e in w.events("node1", "j-die") if e.kind == "started"])
        killed = time.monotonic()
        victim.stop(signal.SIGKILL)
        w.wait("the will", lambda: w.fleet.nodes["node1"].status == "offline", timeout_s=30)
        assert time.monotonic() - killed < 30
        assert _alive(started[0].data["pid"]), "hpcc should outlive a SIGKILLed agent (no cgroup here)"
        # The restarted agent kills what its predecessor left running and reports the job failed.
        agents.start("node1")
        failed = w.wait(
            "the job reported failed", lambda: [e for e in w.events("node1", "j-die") if e.kind == "failed"]
        )
    assert "stopped unexpectedly" in failed[0].reason
    deadline = time.monotonic() + 10
    while _alive(started[0].data["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(started[0].data["pid"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_redelivered_job_runs_once_and_copies_are_refused_as_duplicates(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("node1")
    wait_online(broker, cluster, "node1")
    job = JobSpec(id="j-twice", kind="hpl", params={"n": 600, "nb": 64, "p": 1, "q": 1})
    cmd = encode(Command(id="j-twice", cmd="run", nodes=("node1",), job=job))
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.cluster_cmd(), cmd)
        w.publish(w.topics.node_cmd("node1"), cmd)  # the same job again, as a broker redelivery would bring it
        w.wait("the job to finish", lambda: any(e.kind == "finished" for e in w.events("node1", "j-twice")), 60)
        w.publish(w.topics.cluster_cmd(), cmd)  # and once more after it ended
        w.wait("both copies refused", lambda: [e.kind for e in w.events("node1", "j-twice")].count("rejected") == 2)
    events = w.events("node1", "j-twice")
    kinds = [e.kind for e in events]
    assert kinds.count("accepted") == 1 and kinds.count("started") == 1 and kinds.count("finished") == 1
    assert all(e.data.get("duplicate") and e.field == "job.id" for e in events if e.kind == "rejected")


def test_stopping_the_agent_cancels_its_job_out_loud(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agent = agents.start("node1")
    wait_online(broker, cluster, "node1")
    job = JobSpec(id="j-stop", kind="hpl", params={"n": 6000, "nb": 128, "p": 1, "q": 1})
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.node_cmd("node1"), encode(Command(id="j-stop", cmd="run", job=job)))
        started = w.wait("job started", lambda: [e for e in w.events("node1", "j-stop") if e.kind == "started"])
        assert agent.stop() == 0
        cancelled = w.wait("cancelled", lambda: [e for e in w.events("node1", "j-stop") if e.kind == "cancelled"])
        w.wait("offline", lambda: w.fleet.nodes["node1"].status == "offline")
    assert cancelled[0].reason == "the agent is stopping"
    assert not _alive(started[0].data["pid"])
