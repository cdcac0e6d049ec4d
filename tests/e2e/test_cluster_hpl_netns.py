"""Cluster HPL across network namespaces: every node its own host with its own address and agent, the broker on a
bridge, one real hpcc under one mpirun whose daemons the agents launch over MQTT (no SSH)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.localcluster import agent_argv, free_port, stop, wait_port
from tests.conftest import REPO, paho_env, reap_leftovers
from tests.e2e.netns import NetnsLab
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow


@dataclass
class NetCluster:
    lab: NetnsLab
    port: int
    cluster: str
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def local_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start_agent(self, i: int) -> subprocess.Popen[bytes]:
        node = f"node{i}"
        state = self.tmp / node
        state.mkdir(exist_ok=True)
        conf = state / "agent.toml"
        conf.write_text(
            "[agent]\ntick_s = 0.5\n[jobs]\nprogress_interval_s = 0.5\n"
            f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\nif_include = "{self.lab.subnet}"\n'
            'btl = "self,tcp"\n'
        )
        url = f"mqtt://{self.lab.bridge_ip}:{self.port}"
        argv = self.lab.exec_argv(i, agent_argv(node, url, self.cluster, state, "--config", str(conf)))
        with open(state / "agent.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=paho_env(None), cwd=state)
        self.procs[node] = proc
        return proc

    def ctl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "controller.cli", "--broker", self.local_url, "--cluster", self.cluster, *args]

    def run_hpl(self, nodes: str, n: int, nb: int) -> subprocess.CompletedProcess[str]:
        """``piclusterctl run hpl`` over ``nodes`` to its end, as JSON."""
        argv = self.ctl("run", "hpl", "--nodes", nodes, "--json", "--param", f"n={n}", "--param", f"nb={nb}")
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=paho_env(None))


@pytest.fixture
def netcluster(tmp_path: Path, cluster: str) -> Iterator[NetCluster]:
    if shutil.which("ip") is None or shutil.which("mosquitto") is None:
        pytest.fail("the netns test needs iproute2 and mosquitto: run `make setup` (apt install iproute2 mosquitto)")
    lab = NetnsLab(3)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    broker: subprocess.Popen[bytes] | None = None
    try:
        lab.open()
        port = free_port()
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nlistener {port} {lab.bridge_ip}\nallow_anonymous true\n"
            f"set_tcp_nodelay true\npersistence false\nlog_dest file {tmp_path / 'mosquitto.log'}\n"
        )
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        net = NetCluster(lab, port, cluster, tmp_path, procs)
        for i in (1, 2, 3):
            net.start_agent(i)
        with Watcher(net.local_url, cluster) as w:
            w.wait("three agents online", lambda: w.online("node1", "node2", "node3"), timeout_s=30)
        yield net
    finally:
        for proc in procs.values():
            stop(proc)
        lab.close()
        if broker is not None:
            stop(broker)
        for i in (1, 2, 3):  # the jobs of a killed node
            reap_leftovers(tmp_path / f"node{i}")


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
        launch = json.loads((net.tmp / f"node{i}" / "jobs" / out["job"] / "launch.json").read_text())
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
