"""One HPL over several nodes: members first, then the leader's mpirun; follow all of them; never a hang.

The members are asked to hold themselves for the job and wait for their MPI daemon; once every member runs,
the leader is asked to run mpirun over all of them (its launcher starts each member's daemon through that
member's agent). The job ends with the leader's verdict, or as failed the moment any node drops out (its will
fires), fails or refuses, naming that node; then every node still in it is cancelled, which releases it.
Telemetry of every node is recorded during the run for the result's power, temperature and throttling facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.dispatch import ACCEPT_TIMEOUT_S, Follower, NodeRun, cancel, catch_up, submit
from controller.hpl_plan import ClusterPlan
from controller.recorder import Recorder
from controller.session import Received, Session
from nodeagent.protocol import JobSpec
from nodeagent.protocol.jobs import HplResult

MEMBERS_READY_S = 30.0  # members must be holding for the job by then
RELEASE_S = 20.0  # after the leader's verdict, members still running are cancelled after this long
BLAME_GRACE_S = 2.0  # after a failed leader, how long a member's will may lag behind it
# How long a cancelled node may take to confirm: the runner gives a job 5 s to stop before SIGKILL.
RELEASE_WAIT_S = 12.0


def cluster_job(plan: ClusterPlan, job_id: str, *, timeout_s: float, force: bool, leader_key: str = "") -> JobSpec:
    """The one job every node of ``plan`` receives; ``node_params`` give each its role. ``leader_key``: the
    leader's own public key (its facts): members accept only launches it signed, for this job."""
    leader, members = plan.leader, [n for n in plan.nodes if n != plan.leader]
    node_params: dict[str, dict[str, Any]] = {leader: {"role": "leader", "hosts": ",".join(plan.nodes)}}
    node_params |= {m: {"role": "member", "leader": leader} for m in members}
    params: dict[str, Any] = {
        "n": plan.n,
        "nb": plan.nb,
        "p": plan.p,
        "q": plan.q,
        "ranks_per_node": plan.ranks_per_node,
    }
    if leader_key:  # once for the whole job, not once per member: a 1,050-node command stays small
        params["leader_key"] = leader_key
    if plan.oversubscribe:
        params["oversubscribe"] = True
    return JobSpec(id=job_id, kind="hpl", params=params, node_params=node_params, timeout_s=timeout_s, force=force)


@dataclass
class ClusterOutcome:
    state: str  # finished | failed | detached
    reason: str
    node: str  # the node the failure is pinned on ("" when it passed)
    result: dict[str, Any]
    runs: dict[str, NodeRun]

    @property
    def passed(self) -> bool:
        return self.state == "finished" and bool(self.result.get("passed"))


class ClusterRun:
    """Drives one cluster job through a Session (I/O here; the bookkeeping is Follower's and Recorder's)."""

    def __init__(
        self,
        session: Session,
        plan: ClusterPlan,
        job: JobSpec,
        *,
        on_change: Callable[[NodeRun], None] = lambda run: None,
        clock: Callable[[], float] = time.monotonic,
        detach: bool = False,
    ) -> None:
        self.session = session
        self.plan = plan
        self.job = job
        self.on_change = on_change
        self.clock = clock
        self.follower = Follower(
            session.topics, job.id, plan.nodes, started=clock(), timeout_s=job.timeout_s, sent=session.sent
        )
        self.recorder = Recorder(plan.nodes)
        self.recording = False
        self.started = 0.0
        self.detach = detach  # stop following once the leader has answered (the nodes finish on their own)
        self.submitted: set[str] = set()

    @property
    def members(self) -> list[str]:
        return [n for n in self.plan.nodes if n != self.plan.leader]

    def run(self) -> ClusterOutcome:
        try:
            return self._run()
        except KeyboardInterrupt:
            self._release(self.plan.nodes)
            return self._outcome("failed", "interrupted by the operator", "")

    def _run(self) -> ClusterOutcome:
        runs = self.follower.runs
        if self.members:
            self._submit(self.members)
            deadline = self.clock() + MEMBERS_READY_S
            while not all(runs[m].state == "running" for m in self.members):
                if bad := self._first_bad(self.members):
                    self._release(self.plan.nodes)
                    return self._outcome("failed", _why(runs[bad]), bad)
                if self.clock() > deadline:
                    late = next(m for m in self.members if runs[m].state != "running")
                    self._release(self.plan.nodes)
                    return self._outcome("failed", f"{late} was not ready within {MEMBERS_READY_S:g} s", late)
                self._pump()
                for run in self.follower.expire(self.clock()):
                    self.on_change(run)
        self.recording, self.started = True, time.time()
        self.follower.accept_deadline = self.clock() + ACCEPT_TIMEOUT_S
        self._submit([self.plan.leader])
        leader = runs[self.plan.leader]
        while self.detach and leader.state == "submitted":
            self._pump()
            for run in self.follower.expire(self.clock()):
                self.on_change(run)
        if self.detach and not leader.ended:
            return self._outcome("detached", "", "")
        while not leader.ended:
            if (bad := self._first_bad(self.members)) is not None:
                self._release(self.plan.nodes)
                return self._outcome("failed", _why(runs[bad]), bad)
            self._pump()
            for run in self.follower.expire(self.clock()):
                self.on_change(run)
        if leader.state != "finished" or not leader.passed:
            node = self._culprit()
            self._release(self.plan.nodes)
            return self._outcome("failed", _why(runs[node]), node)
        ended_at = self.clock()
        while not all(runs[m].ended for m in self.members) and self.clock() - ended_at < RELEASE_S:
            self._pump()
        self._release([m for m in self.members if not runs[m].ended])
        return self._outcome("finished", "", "")

    def _culprit(self) -> str:
        """Whom a failed run is pinned on. mpirun fails when a member's daemon dies, and the member's will may
        arrive a moment after the leader's verdict: give it BLAME_GRACE_S. A member that failed only after the
        leader did was taken down by it (mpirun stops every daemon when it fails), so it is not the cause."""
        runs = self.follower.runs
        deadline = self.clock() + BLAME_GRACE_S
        while self.clock() < deadline and not any(runs[m].state == "offline" for m in self.members):
            self._pump()
        offline = [m for m in self.members if runs[m].state == "offline"]
        return offline[0] if offline else self.plan.leader

    # --- helpers ---------------------------------------------------------------------------------------------
    def _submit(self, nodes: list[str]) -> None:
        self.submitted.update(nodes)
        submit(self.session, self.job, nodes)

    def _pump(self) -> None:
        catch_up(self.session, self.follower)
        msg = self.session.get(0.25)
        while msg is not None:
            self._apply(msg)
            msg = self.session.get(0)

    def _apply(self, msg: Received) -> None:
        if self.recording:
            self.recorder.tap(self.session.topics, msg)
        if (run := self.follower.apply(msg)) is not None:
            self.on_change(run)

    def _first_bad(self, nodes: list[str]) -> str | None:
        """A node that left the job other than by finishing (offline, failed, refused, cancelled, silent)."""
        for node in nodes:
            run = self.follower.runs[node]
            if run.ended and run.state != "finished":
                return node
        return None

    def _release(self, nodes: list[str] | tuple[str, ...]) -> None:
        """Cancel the job wherever it may still hold a node (a late accept after no-answer included), and wait
        until the nodes still in it confirm, so that they take the next job the moment the command returns."""
        runs = self.follower.runs
        done = ("finished", "failed", "cancelled", "rejected")
        nodes = [n for n in nodes if n in self.submitted]  # the leader is not asked before the members are ready
        cancel(self.session, self.job.id, [n for n in nodes if runs[n].state not in done])
        deadline = self.clock() + RELEASE_WAIT_S
        while any(not runs[n].ended for n in nodes) and self.clock() < deadline:
            self._pump()

    def _outcome(self, state: str, reason: str, node: str) -> ClusterOutcome:
        leader = self.follower.runs[self.plan.leader]
        hpl = leader.result or {}
        summary = self.recorder.summary()
        gflops = hpl.get("gflops")
        plan = {"n": self.plan.n, "nb": self.plan.nb, "p": self.plan.p, "q": self.plan.q}
        result = {
            **HplResult.fields_of(hpl),  # the leader's HPL figures, as the agent parsed them
            **{k: hpl.get(k, v) for k, v in plan.items()},
            "passed": state == "finished" and bool(hpl.get("passed")),
            "nodes": list(self.plan.nodes),
            "ranks": self.plan.ranks,
            **summary,
            "gflops_per_w": round(gflops / summary["power_avg_w"], 3) if gflops and summary["power_avg_w"] else None,
            "plan": self.plan.to_dict(),
            "leader": self.plan.leader,
            "telemetry": self.recorder.samples,
            "started_at": self.started or None,
        }
        forced = [f"{r.node}: {why}" for r in self.follower.runs.values() for why in r.forced_reasons]
        if forced:  # as in a per-node result, so a report shows the run was not on healthy nodes alone
            result["forced"], result["forced_reasons"] = True, forced
        if state not in ("finished", "detached"):
            result["failed_node"] = node
            result["reason"] = reason
        return ClusterOutcome(state, reason, node, result, self.follower.runs)


def _why(run: NodeRun) -> str:
    return f"{run.node} {run.state}: {run.reason}" if run.reason else f"{run.node} {run.state}"
