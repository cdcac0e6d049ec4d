"""``run distcc``: the plan (who listens where, who may connect, how many compiles at once) and the result per
node. Pure: from the nodes' facts and the operator's ``--set`` values.

- Every selected node takes part; the leader (the first, or ``--leader``) runs make, the others run distccd.
- ``allow``: every IPv4 address of the selection (facts ``addresses``), nothing else.
- The port: ``port`` (default 3632) on every worker; workers that share an address (simulated nodes on one
  host) get consecutive ports so they do not collide.
- make ``-j``: ``jobs``, else the selection's cores summed times ``jobs_per_core`` (2: distcc's own advice of
  about two jobs per CPU, which hides the network's latency), rounded up. Each host's slots in DISTCC_HOSTS are
  its cores.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from controller.fleet import NodeView
from controller.orchestrate import PlanError, RolePlan
from nodeagent.protocol.jobs import DISTCC_PORT, compiler_name, make_targets

OPERATOR_KEYS = ("dir", "target", "cc", "port", "jobs", "jobs_per_core")
JOBS_PER_CORE = 2.0


@dataclass(frozen=True)
class DistccPlan:
    leader: str
    workers: tuple[str, ...]
    addresses: dict[str, list[str]]  # every node's IPv4 addresses (facts)
    ports: dict[str, int]  # each worker's distccd port
    cores: dict[str, int]
    make_jobs: int
    dir: str
    target: str
    cc: str

    @property
    def allow(self) -> list[str]:
        return [a for node in (self.leader, *self.workers) for a in self.addresses[node]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "workers": list(self.workers),
            "allow": self.allow,
            "ports": self.ports,
            "cores": self.cores,
            "make_jobs": self.make_jobs,
            "dir": self.dir,
            "target": self.target,
            "cc": self.cc,
        }

    def hosts(self, ready: list[dict[str, Any]]) -> str:
        """DISTCC_HOSTS: the leader itself, then each worker where it said it listens, each with its cores."""
        entries = [f"localhost/{self.cores[self.leader]}"]
        entries += [f"{r.get('address', '')}/{self.cores[w]}" for w, r in zip(self.workers, ready, strict=True)]
        return " ".join(entries)

    def roles(self) -> RolePlan:
        worker = {"role": "worker", "allow": ",".join(self.allow), "leader": ",".join(self.addresses[self.leader])}
        leader = {"role": "leader", "dir": self.dir, "target": self.target, "cc": self.cc, "jobs": self.make_jobs}
        per_worker = {w: {"port": self.ports[w], "slots": self.cores[w]} for w in self.workers}
        return RolePlan(worker, leader, lambda lead, ready: {**lead, "hosts": self.hosts(ready)}, per_worker)


def _ipv4(addresses: tuple[str, ...]) -> list[str]:
    out = []
    for text in addresses:
        try:
            out.append(str(ipaddress.IPv4Address(text)))
        except ValueError:
            continue
    return out


def _number(params: dict[str, str], key: str, default: float, lo: float, hi: float, kind: type) -> Any:
    text = params.get(key)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        word = "a whole number" if kind is int else "a number"
        raise PlanError(f"distcc: {key}: expected {word}, got {text!r}") from None
    if not lo <= value <= hi:
        raise PlanError(f"distcc: {key}: expected {lo:g} to {hi:g}, got {text}")
    return value


def plan_distcc(views: dict[str, NodeView], leader: str, workers: list[str], params: dict[str, str]) -> DistccPlan:
    """The plan, or PlanError naming what is wrong (a missing dir, a bad target, a node without an address)."""
    unknown = sorted(set(params) - set(OPERATOR_KEYS))
    if unknown:
        raise PlanError(f"distcc: parameter {unknown[0]!r} is not one to set (parameters: {', '.join(OPERATOR_KEYS)})")
    if not params.get("dir"):
        raise PlanError(
            "distcc: --set dir=DIR is required: the build directory on the leader (under its jobs.build_root), "
            "e.g. --set dir=linux --set target=Image"
        )
    try:
        make_targets(params.get("target", ""))
        cc = compiler_name(params.get("cc", "gcc"))
    except ValueError as exc:
        raise PlanError(f"distcc: {exc}") from None
    nodes = [leader, *workers]
    addresses, cores = {}, {}
    for node in nodes:
        facts = views[node].facts
        if facts is None:
            raise PlanError(f"distcc: node {node} has published no facts yet; wait for its agent to connect")
        addresses[node] = _ipv4(facts.addresses)
        if not addresses[node]:
            raise PlanError(
                f"distcc: node {node} publishes no IPv4 address (facts 'addresses'); upgrade its agent, or check "
                "its network"
            )
        cores[node] = max(1, facts.cores)
    base = _number(params, "port", DISTCC_PORT, 1024, 65535, int)
    ports: dict[str, int] = {}
    taken: set[tuple[str, int]] = set()
    for worker in workers:
        port = base
        while any((a, port) in taken for a in addresses[worker]):
            port += 1  # simulated nodes on one host share its addresses
        if port > 65535:
            raise PlanError(f"distcc: no free port from {base} for {worker}")
        ports[worker] = port
        taken.update((a, port) for a in addresses[worker])
    per_core = _number(params, "jobs_per_core", JOBS_PER_CORE, 0.1, 16.0, float)
    make_jobs = _number(params, "jobs", 0, 0, 65536, int) or math.ceil(sum(cores.values()) * per_core)
    return DistccPlan(
        leader, tuple(workers), addresses, ports, cores, make_jobs, params["dir"], params.get("target", ""), cc
    )


def shares(plan: DistccPlan, leader_result: dict[str, Any], ready: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The job's figures from the leader's result: files compiled per node and each node's share of them.
    ``ready``: each worker's ready answer (its ``address``, which is how DISTCC_HOSTS and distcc's log name it)."""
    by_address = {str(r.get("address", "")): w for w, r in ready.items()}
    compiled: dict[str, int] = dict.fromkeys((plan.leader, *plan.workers), 0)
    unknown = 0
    for host, count in (leader_result.get("compiles") or {}).items():
        node = plan.leader if host == "localhost" else by_address.get(host)
        if node is None:
            unknown += int(count)
        else:
            compiled[node] += int(count)
    total = sum(compiled.values()) + unknown
    return {
        "wall_s": leader_result.get("wall_s"),
        "make_jobs": leader_result.get("make_jobs", plan.make_jobs),
        "compiles_total": total,
        "compiles_by_node": compiled,
        "shares": {n: round(c / total, 4) if total else 0.0 for n, c in compiled.items()},
        "fallbacks": leader_result.get("fallbacks", 0),
    }
