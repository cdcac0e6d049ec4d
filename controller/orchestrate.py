"""Cluster inference jobs (``llama-rpc``, ``dllama``): workers first, then the leader with their addresses.

1. one ``run`` for every worker (``role=worker``, job id ``<id>.workers``); each answers ``ready`` with its
   ``host:port`` once its server listens;
2. when all are ready, one ``run`` for the leader (``role=leader``/``root``, job id ``<id>``) with the addresses;
3. when the leader ends (or a worker fails before that, or Ctrl-C), ``cancel`` the workers and wait for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.dispatch import Follower, NodeRun, cancel, follow_once, new_job_id, submit, submit_and_follow
from controller.session import Received, Session
from nodeagent.protocol import JobSpec
from nodeagent.protocol.jobs import (
    DLLAMA_ROOT_KEYS,
    DLLAMA_WORKER_KEYS,
    RPC_LEADER_KEYS,
    RPC_WORKER_KEYS,
    dllama_nodes_problem,
)

READY_TIMEOUT_S = 60.0  # a worker that does not listen by then is reported, and the job is not started
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Roles:
    leader_role: str
    address_param: str  # the leader's parameter that takes the worker addresses
    separator: str
    worker_keys: frozenset[str]
    leader_keys: frozenset[str]


ROLES = {
    "llama-rpc": Roles("leader", "rpc", ",", frozenset(RPC_WORKER_KEYS), frozenset(RPC_LEADER_KEYS)),
    "dllama": Roles("root", "workers", " ", frozenset(DLLAMA_WORKER_KEYS), frozenset(DLLAMA_ROOT_KEYS)),
}


class PlanError(ValueError):
    """The request cannot become a cluster job (bad node count, unknown parameter)."""


@dataclass
class ClusterRun:
    job_id: str
    leader: NodeRun
    workers: dict[str, NodeRun] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.leader.passed


def split_params(kind: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's ``--set`` values as (worker params, leader params); a key neither role takes is an error."""
    roles = ROLES[kind]
    unknown = sorted(set(params) - roles.worker_keys - roles.leader_keys - {"role"})
    if unknown or "role" in params or roles.address_param in params:
        bad = (unknown or ["role" if "role" in params else roles.address_param])[0]
        known = sorted((roles.worker_keys | roles.leader_keys) - {"role", roles.address_param})
        raise PlanError(f"{kind}: parameter {bad!r} is not one to set (parameters: {', '.join(known)})")
    worker = {k: v for k, v in params.items() if k in roles.worker_keys} | {"role": "worker"}
    leader = {k: v for k, v in params.items() if k in roles.leader_keys and k != "port"}
    return worker, leader | {"role": roles.leader_role}


def check_nodes(kind: str, nodes: int, params: dict[str, Any]) -> None:
    """Refuse before starting anything when the node count cannot work."""
    if kind == "dllama":
        kv = params.get("kv_heads")
        problem = dllama_nodes_problem(nodes, int(kv) if kv not in (None, "", 0, "0") else 1 << 30)
        if problem:
            raise PlanError(problem)


def leader_params(kind: str, base: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    roles = ROLES[kind]
    return {**base, roles.address_param: roles.separator.join(addresses)}


@dataclass(frozen=True)
class RolePlan:
    """What each role of a cluster job is sent: the workers' parameters (``per_worker`` adds to them by node) and
    the leader's, which ``complete`` finishes with the workers' ``ready`` answers (by worker, in order)."""

    worker: dict[str, Any]
    leader: dict[str, Any]
    complete: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]
    per_worker: dict[str, dict[str, Any]] = field(default_factory=dict)


def role_plan(kind: str, params: dict[str, Any], nodes: int) -> RolePlan:
    """The roles of an inference kind (``ROLES``) from the operator's ``--set`` values."""
    worker, base = split_params(kind, params)
    check_nodes(kind, nodes, params)
    return RolePlan(worker, base, lambda lead, ready: leader_params(kind, lead, [r.get("address", "") for r in ready]))


def run_cluster(
    session: Session,
    kind: str,
    leader: str,
    workers: list[str],
    plan: RolePlan,
    *,
    timeout_s: float,
    force: bool = False,
    on_change: Callable[[NodeRun], None] = lambda run: None,
    clock: Callable[[], float] = time.monotonic,
    tap: Callable[[Received], None] = lambda msg: None,
    record: Callable[[JobSpec, list[str]], None] = lambda job, nodes: None,
    job_id: str = "",
) -> ClusterRun:
    """Start the workers, wait for them, run the leader, stop the workers. Never hangs: every wait is bounded.
    ``tap`` sees every message meanwhile; ``record`` every job (workers', leader's) just before it is sent."""
    job_id = job_id or new_job_id(kind)
    outcome = ClusterRun(job_id, NodeRun(leader))
    wjob = JobSpec(
        id=f"{job_id}.workers",
        kind=kind,
        params=plan.worker,
        node_params={w: p for w, p in plan.per_worker.items() if w in workers},
        timeout_s=timeout_s + 120,
        force=force,
    )
    follower = Follower(session.topics, wjob.id, workers, started=clock(), timeout_s=wjob.timeout_s, sent=session.sent)
    pump = _pumper(session, follower, on_change, clock, tap)
    try:
        if workers:
            record(wjob, workers)
            submit(session, wjob, workers)
            if not _wait_ready(follower, pump, clock):
                outcome.leader.state = "not-started"
                outcome.leader.reason = "workers not ready: " + "; ".join(
                    f"{r.node} {r.state}{': ' + r.reason if r.reason else ''}"
                    for r in follower.runs.values()
                    if not _ready(r)
                )
                return outcome
        ready = [follower.runs[w].ready for w in workers]
        ljob = JobSpec(id=job_id, kind=kind, params=plan.complete(plan.leader, ready), timeout_s=timeout_s, force=force)
        record(ljob, [leader])
        runs = submit_and_follow(session, ljob, [leader], on_change=on_change, clock=clock, tap=tap)
        outcome.leader = runs[leader]
    finally:
        outcome.workers = _stop_workers(session, follower, pump, clock) if workers else {}
    return outcome


def _pumper(
    session: Session, follower: Follower, on_change: Callable[[NodeRun], None], clock: Any, tap: Any
) -> Callable[[], None]:
    def pump() -> None:
        follow_once(session, follower, on_change, clock, tap)

    return pump


def _wait_ready(follower: Follower, pump: Callable[[], None], clock: Any) -> bool:
    deadline = clock() + READY_TIMEOUT_S
    while clock() < deadline:
        pump()
        runs = follower.runs.values()
        if all(_ready(r) for r in runs):
            return True
        if any(r.ended for r in runs):
            return False
    for run in follower.runs.values():
        if not _ready(run) and not run.ended:
            run.reason = f"not listening after {READY_TIMEOUT_S:g} s"
    return False


def _ready(run: NodeRun) -> bool:
    """A worker that said where it listens and has not ended (progress after ``ready`` makes it "running")."""
    return bool(run.ready) and not run.ended


def _stop_workers(session: Session, follower: Follower, pump: Callable[[], None], clock: Any) -> dict[str, NodeRun]:
    live = [r.node for r in follower.runs.values() if not r.ended]
    cancel(session, follower.job_id, live)
    deadline = clock() + STOP_TIMEOUT_S
    while clock() < deadline and not follower.done:
        pump()
    return follower.runs
