"""`piclusterctl run hpl` over several simulated nodes on loopback: one real hpcc under one mpirun, whose remote
daemons the agents launch through the broker (no SSH)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

LAUNCHER = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n'


def wait_online(broker: Mosquitto, cluster: str, *nodes: str) -> None:
    with Watcher(broker.url, cluster) as w:
        w.wait(f"{nodes} online", lambda: w.online(*nodes))


def test_one_hpl_over_two_nodes_launched_by_the_agents(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    for node in ("node1", "node2"):
        agents.start(node, config=LAUNCHER)
    wait_online(broker, cluster, "node1", "node2")

    proc = ctl(broker, cluster, "run", "hpl", "--nodes", "node[1-2]", "--json", "--param", "n=1200", "--param", "nb=96")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["state"] == "finished"
    assert (out["n"], out["nb"], out["p"], out["q"]) == (1200, 96, 1, 2)
    assert out["nodes"] == ["node1", "node2"] and out["leader"] == "node1" and out["ranks"] == 2
    assert out["gflops"] > 0.1 and out["residual"] < 16.0
    member = out["runs"][1]
    assert member["node"] == "node2" and member["state"] == "finished" and member["result"]["role"] == "member"
    launch = agents.tmp_path / "node2" / "jobs" / out["job"] / "launch.json"
    assert json.loads(launch.read_text())["argv"][0] == "orted"  # node2 really hosted an MPI daemon
    assert out["plan"]["smallest_node"] in ("node1", "node2") and out["plan"]["ranks_per_node"] == 1
    assert set(out["throttled"]) == {"node1", "node2"}
    assert out["telemetry"]["node1"] and out["telemetry"]["node2"]  # both nodes' telemetry recorded with the job
