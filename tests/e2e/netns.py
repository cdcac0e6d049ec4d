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
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


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
