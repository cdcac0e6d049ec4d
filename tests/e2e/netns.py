"""Simulated nodes that are separate hosts on the network: one network namespace each, on a private bridge.

Node i lives in namespace ``<prefix>n<i>`` with address 10.A.B.(10+i)/24 on a veth whose other end sits on the
bridge ``<prefix>br`` (10.A.B.1/24, where the broker listens). Every namespace gets an ``/etc/hosts`` that also
names every node (``ip netns exec`` mounts ``/etc/netns/<ns>/hosts`` over it), as a real cluster's hosts would: a
member finds its leader's address by name. Names and the subnet derive from the test process's pid, so parallel
runs do not collide. ``close()`` kills whatever still runs in the namespaces and deletes every namespace, veth, hosts
file and the bridge, and is safe to call after a partial ``open()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts.localcluster import agent_argv, free_port, open_to_jobs, sim_jobs_config, stop, wait_port
from tests.conftest import REPO, paho_env, reap_leftovers
from tests.integration.helpers import Watcher

NETNS_ETC = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, check=check)


@dataclass
class NetnsLab:
    """A bridge and ``count`` namespaces; ``exec_argv(i, argv)`` runs a command as node i."""

    count: int
    pid: int = field(default_factory=os.getpid)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"pc{self.pid % 100000}"  # interface names are at most 15 characters

    @property
    def subnet_base(self) -> str:
        return f"10.{200 + self.pid % 50}.{self.pid // 50 % 250}"

    @property
    def subnet(self) -> str:
        return f"{self.subnet_base}.0/24"

    @property
    def bridge_ip(self) -> str:
        return f"{self.subnet_base}.1"

    def node_ip(self, i: int) -> str:
        return f"{self.subnet_base}.{10 + i}"

    def ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def open(self) -> NetnsLab:
        bridge = f"{self.prefix}br"
        _ip("link", "add", bridge, "type", "bridge")
        self.links.append(bridge)
        _ip("addr", "add", f"{self.bridge_ip}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i in range(1, self.count + 1):
            ns, host_end, node_end = self.ns(i), f"{self.prefix}h{i}", f"{self.prefix}v{i}"
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
            self.links.append(host_end)
            _ip("link", "set", node_end, "netns", ns)
            _ip("link", "set", host_end, "master", bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{self.node_ip(i)}/24", "dev", node_end)
            _ip("-n", ns, "link", "set", node_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        hosts = Path("/etc/hosts").read_text().rstrip("\n") + "\n"  # the machine's own names stay
        hosts += "".join(f"{self.node_ip(i)} node{i}\n" for i in range(1, self.count + 1))
        for ns in self.namespaces:
            (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / ns / "hosts").write_text(hosts)
        return self

    def exec_argv(self, i: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def pids(self, i: int) -> list[int]:
        out = _ip("netns", "pids", self.ns(i), check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, i: int) -> None:
        """SIGKILL every process in node i's namespace (its agent, MPI daemon and ranks): the node dies."""
        for pid in self.pids(i):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for i, ns in enumerate(self.namespaces, start=1):
            self.kill_all(i)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when no other lab's files are there
            NETNS_ETC.rmdir()
        for link in reversed(self.links):
            _ip("link", "del", link, check=False)
        self.namespaces.clear()
        self.links.clear()

    def partition(self, i: int) -> None:
        """Drop every packet to and from node i, silently: a blackhole qdisc on both ends of its veth, so neither
        side sees an error, a reset or a lost carrier (a cut cable somewhere between, not a dead node)."""
        for where, dev in self._veth_ends(i):
            _tc(*where, "qdisc", "add", "dev", dev, "root", "blackhole")

    def heal(self, i: int) -> None:
        """Undo ``partition(i)``."""
        for where, dev in self._veth_ends(i):
            _tc(*where, "qdisc", "del", "dev", dev, "root", check=False)

    def _veth_ends(self, i: int) -> tuple[tuple[tuple[str, ...], str], ...]:
        return (("-n", self.ns(i)), f"{self.prefix}v{i}"), ((), f"{self.prefix}h{i}")


@dataclass
class NetCluster:
    """A lab with a broker on its bridge (and on loopback for piclusterctl) and an agent per node."""

    lab: NetnsLab
    port: int
    cluster: str
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]]
    config: str = ""  # more agent config, after the defaults below
    jobs: str = ""  # more [jobs] keys, in that table of the defaults

    @property
    def local_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start_agent(self, i: int, jobs: str = "") -> subprocess.Popen[bytes]:
        """Node i's agent, its ``[jobs]`` table given ``jobs`` after the cluster's own ``jobs`` keys."""
        node = f"node{i}"
        state = self.tmp / node
        state.mkdir(exist_ok=True)
        open_to_jobs(state)
        conf = state / "agent.toml"
        conf.write_text(
            f"[agent]\ntick_s = 0.5\n[jobs]\nprogress_interval_s = 0.5\n{self.jobs}{jobs}"
            + sim_jobs_config()
            + f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\nif_include = "{self.lab.subnet}"\n'
            'btl = "self,tcp"\n' + self.config
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


@contextlib.contextmanager
def net_cluster(tmp_path: Path, cluster: str, count: int = 3, config: str = "", jobs: str = "") -> Iterator[NetCluster]:
    """``count`` namespaced nodes online with their agents (``config`` and ``[jobs]`` keys ``jobs`` added to their
    configuration); everything stopped and removed afterwards."""
    if shutil.which("ip") is None or shutil.which("mosquitto") is None:
        raise AssertionError("the netns tests need iproute2 and mosquitto: run `make setup`")
    lab = NetnsLab(count)
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
        net = NetCluster(lab, port, cluster, tmp_path, procs, config, jobs)
        nodes = [f"node{i}" for i in range(1, count + 1)]
        for i in range(1, count + 1):
            net.start_agent(i)
        with Watcher(net.local_url, cluster) as w:
            w.wait(f"{count} agents online", lambda: w.online(*nodes), timeout_s=30)
        yield net
    finally:
        for proc in procs.values():
            stop(proc)
        lab.close()
        if broker is not None:
            stop(broker)
        for i in range(1, count + 1):  # the jobs of a killed node
            reap_leftovers(tmp_path / f"node{i}")
