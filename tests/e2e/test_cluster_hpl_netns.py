"""Cluster HPL across network namespaces: every node its own host with its own address and agent, the broker on a
bridge, one real hpcc under one mpirun whose daemons the agents launch over MQTT (no SSH), signed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, paho_env
from tests.e2e.netns import NetCluster, net_cluster
from tests.integration.helpers import Watcher
from tests.signing import OperatorKey

pytestmark = pytest.mark.slow


@pytest.fixture
def netcluster(tmp_path: Path, cluster: str, operator: OperatorKey) -> Iterator[NetCluster]:
    """Three nodes that obey only signed commands: piclusterctl signs with the operator's key (PICLUSTER_KEY), the
    leader's agent signs each launch with its own."""
    with net_cluster(tmp_path, cluster, 3, config=operator.config()) as net:
        yield net


def _hpcc_out(net: NetCluster, job: str) -> str:
    return (net.tmp / "node1" / "jobs" / job / "hpccoutf.txt").read_text()


def test_cluster_hpl_over_three_namespaced_nodes(netcluster: NetCluster) -> None:
    net = netcluster
    proc = net.run_hpl("node[1-3]", 1536, 128)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["residual"] < 16.0
    assert (out["n"], out["nb"], out["p"], out["q"], out["ranks"]) == (1536, 128, 1, 3, 3)
    # hpcc falls back to its own defaults silently when it dislikes its input: check what it really ran.
    text = _hpcc_out(net, out["job"])
    for key, value in (("HPL_N", 1536), ("HPL_NB", 128), ("HPL_nprow", 1), ("HPL_npcol", 3)):
        assert f"\n{key}={value}\n" in text
    for i in (2, 3):  # each member hosted an MPI daemon started through its agent, in its own namespace
        launch = json.loads((net.tmp / f"node{i}" / "control" / out["job"] / "launch.json").read_text())
        assert launch["argv"][0] == "orted" and launch["leader"] == "node1"
    assert [r["state"] for r in out["runs"]] == ["finished"] * 3


def test_a_member_dying_mid_run_fails_the_job_naming_it_and_releases_the_others(netcluster: NetCluster) -> None:
    net = netcluster
    with Watcher(net.local_url, net.cluster) as w:
        ctl = subprocess.Popen(
            net.ctl("run", "hpl", "--nodes", "node[1-3]", "--json", "--param", "n=6000", "--param", "nb=128"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=paho_env(None),
        )
        try:
            w.wait(
                "node3's daemon launched",
                lambda: any(
                    e.kind == "accepted" and e.job.endswith(tuple("0123456789abcdef")) and ".launch-" in e.job
                    for e in w.events("node3")
                ),
                timeout_s=60,
            )
            w.wait("the leader's hpcc running", lambda: any(e.kind == "progress" for e in w.events("node1")), 60)
            for i in (1, 2, 3):
                # The nodes share this host's name and /tmp. Open MPI names its session directory (with the hwloc
                # topology file every daemon writes) by host and mpirun's pid, so unless it is in each job's own
                # TMPDIR the daemons overwrite each other's files and crash at random.
                tmps = [Path(m.read_text()) for m in (net.tmp / f"node{i}" / "jobs").glob("*.tmpdir")]
                assert any(list(t.glob("ompi.*")) for t in tmps), f"node{i}'s MPI session is not in its job's TMPDIR"
            killed = time.monotonic()
            net.procs["node3"].send_signal(signal.SIGKILL)
            net.lab.kill_all(3)
            stdout, stderr = ctl.communicate(timeout=60)
            took = time.monotonic() - killed
        finally:
            if ctl.poll() is None:
                ctl.kill()
                ctl.wait()
    assert ctl.returncode == 1, stdout + stderr
    out = json.loads(stdout)
    assert out["state"] == "failed" and out["passed"] is False
    assert out["failed_node"] == "node3" and "node3" in out["reason"]
    assert took < 30, f"the job took {took:.1f} s to fail after node3 died"
    # The survivors are released: they take a new job at once.
    proc = net.run_hpl("node[1-2]", 800, 64)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["passed"] is True
