"""Submit one job to a selection of nodes and follow every node to an end: never a hang.

A node ends when its agent says so (finished, failed, rejected, cancelled), when its will says it went offline,
when it does not answer the submission in time, or when the job's own time runs out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.session import Received, Session
from nodeagent.errors import ProtocolError
from nodeagent.protocol import OFFLINE, Command, Event, JobSpec, Topics, decode

ACCEPT_TIMEOUT_S = 15.0
# The agent enforces the job's timeout itself; the controller waits this much longer for the verdict.
VERDICT_GRACE_S = 30.0
EXPIRE_SCAN_S = 0.1  # past a deadline, how often the nodes still in the job are looked at

NOT_SENT = "the node is offline; the job was not sent to it"  # the reason of a node offline at submission
ENDED = frozenset({"finished", "failed", "rejected", "cancelled", "offline", "no-answer", "timeout"})


@dataclass
class NodeRun:
    """One node's part of a job, as the controller has seen it so far."""

    node: str
    state: str = "submitted"
    plan: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None
    phase: str = ""
    result: dict[str, Any] | None = None
    reason: str = ""
    last_seq: int = 0
    ready: dict[str, Any] = field(default_factory=dict)  # a cluster worker's ready event data (its address)
    forced_reasons: list[str] = field(default_factory=list)  # what --force overrode on this node (accepted event)
    auth: str = ""  # the node refused the command's signature (or its lack): the code (security/gate.py)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def passed(self) -> bool:
        return self.state == "finished" and bool(self.result and self.result.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state,
            "passed": self.passed,
            "plan": self.plan,
            "result": self.result,
            "reason": self.reason,
        }


def new_job_id(kind: str, now: float | None = None) -> str:
    """Sortable and unique: ``hpl-20261123-142501-3fa2``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{kind}-{stamp}-{secrets.token_hex(2)}"


class Follower:
    """Pure bookkeeping of one job's events per node (no I/O, time passed in). ``sent``: digests of the commands
    this controller sent (``Session.sent``); a node's refusal of a signature counts only when it quotes one of
    them, since whoever reaches the broker can make a node refuse a forged copy that carries the job's id."""

    def __init__(
        self,
        topics: Topics,
        job_id: str,
        nodes: Iterable[str],
        *,
        started: float,
        timeout_s: float,
        accept_timeout_s: float = ACCEPT_TIMEOUT_S,
        sent: Container[str] = frozenset(),
    ) -> None:
        self.topics = topics
        self.sent = sent
        self.job_id = job_id
        self.runs = {n: NodeRun(n) for n in nodes}
        self.started = started
        self.accept_deadline = started + accept_timeout_s
        self.deadline = started + timeout_s + VERDICT_GRACE_S
        # The nodes still in the job, kept as their runs end: done and expire are asked after every message, and
        # scanning every node each time was quadratic (3 s of a 1,050-node run's CPU).
        self._open = set(self.runs)
        self._next_scan = 0.0
        self.connects: int | None = None  # the session's connect count when last looked at (catch_up)

    @property
    def done(self) -> bool:
        return not self._open

    def apply(self, msg: Received) -> NodeRun | None:
        """Update from one message; return the run it changed, if any."""
        parsed = self.topics.parse(msg.topic)
        if parsed is None or parsed[0] not in self.runs:
            return None
        run = self.runs[parsed[0]]
        if run.ended:
            return None
        if parsed[1] == "status" and msg.payload.decode(errors="replace") == OFFLINE:
            run.state, run.reason = (
                "offline",
                "the node went offline during the job (its agent stopped or lost "
                "the broker); check it with: piclusterctl nodes",
            )
            self._open.discard(run.node)
            return run
        if parsed[1] != "events":
            return None
        try:
            event = decode(msg.payload, Event)
        except ProtocolError:
            return None
        if event.job != self.job_id or event.seq <= run.last_seq:
            return None  # another job's event, or a QoS 1 duplicate
        run.last_seq = event.seq
        changed = self._event(run, event)
        if run.ended:
            self._open.discard(run.node)
        return changed

    def _event(self, run: NodeRun, event: Event) -> NodeRun | None:
        if event.kind == "rejected" and event.data.get("duplicate"):
            return None  # a redelivered copy refused; the first copy's verdict is still to come
        if event.kind == "rejected" and "auth" in event.data:
            # Our command refused (unsigned, unknown key, stale...) is this node's end, unless it answered ours.
            if run.state != "submitted" or event.data.get("digest") not in self.sent:
                return None
            run.state, run.reason, run.auth = "rejected", event.reason, str(event.data["auth"])
            return run
        if event.kind == "accepted":
            run.state = "accepted"
            run.plan = dict(event.data.get("plan") or {})
            run.forced_reasons = [str(r) for r in event.data.get("forced_reasons") or ()]
        elif event.kind == "started":
            run.state = "running"
        elif event.kind == "queued":
            run.state, run.phase = "queued", f"queued at position {event.data.get('position', '?')}"
        elif event.kind == "ready":
            run.state, run.ready = "ready", dict(event.data)
        elif event.kind == "progress":
            run.state = "running"
            run.progress, run.phase = event.progress, event.phase
        elif event.kind == "finished":
            run.state, run.result = "finished", dict(event.result or {})
            run.progress = 1.0
        elif event.kind in ("failed", "rejected", "cancelled"):
            run.state, run.reason = event.kind, event.reason
        else:
            return None
        return run

    def expire(self, now: float) -> list[NodeRun]:
        """Time-based endings: no answer to the submission, or no verdict before the deadline. The nodes are looked
        at once a deadline has passed, and then at most every EXPIRE_SCAN_S."""
        if (now <= self.accept_deadline and now <= self.deadline) or now < self._next_scan:
            return []
        self._next_scan = now + EXPIRE_SCAN_S
        changed = []
        for run in [r for node, r in self.runs.items() if node in self._open]:  # in the selection's order
            if run.ended:
                self._open.discard(run.node)
                continue
            if run.state == "submitted" and now > self.accept_deadline:
                run.state = "no-answer"
                run.reason = f"the agent did not answer within {self.accept_deadline - self.started:g} s"
                changed.append(run)
            elif now > self.deadline:
                run.state, run.reason = "timeout", "no result before the job's timeout"
                changed.append(run)
        for run in changed:
            self._open.discard(run.node)
        return changed


def submit_and_follow(
    session: Session,
    job: JobSpec,
    nodes: list[str],
    *,
    on_change: Callable[[NodeRun], None] = lambda run: None,
    clock: Callable[[], float] = time.monotonic,
    tap: Callable[[Received], None] = lambda msg: None,
) -> dict[str, NodeRun]:
    """Publish ``job`` once for all ``nodes`` and follow it to the end. Ctrl-C cancels it on every node.
    ``tap`` sees every message received meanwhile (a telemetry recorder)."""
    follower = Follower(session.topics, job.id, nodes, started=clock(), timeout_s=job.timeout_s, sent=session.sent)
    submit(session, job, nodes)
    try:
        while not follower.done:
            for run in follow_once(session, follower, on_change, clock, tap):
                if run.state == "timeout":
                    cancel(session, job.id, [run.node])
    except KeyboardInterrupt:
        live = [r.node for r in follower.runs.values() if not r.ended]
        cancel(session, job.id, live)
        for node in live:
            follower.runs[node].state, follower.runs[node].reason = "cancelled", "interrupted by the operator"
    return follower.runs


def follow_once(
    session: Session,
    follower: Follower,
    on_change: Callable[[NodeRun], None],
    clock: Callable[[], float],
    tap: Callable[[Received], None],
) -> list[NodeRun]:
    """Take one message (waiting up to 0.25 s) into ``follower``, after ``tap``; returns the runs that ran out of
    time meanwhile (each also passed to ``on_change``). A session back from losing the broker first asks the
    nodes to say again what it missed (catch_up)."""
    catch_up(session, follower)
    msg = session.get(0.25)
    if msg is not None:
        tap(msg)
        if (run := follower.apply(msg)) is not None:
            on_change(run)
    expired = follower.expire(clock())
    for run in expired:
        on_change(run)
    return expired


def submit(session: Session, job: JobSpec, nodes: list[str]) -> None:
    """One ``run`` command on the cluster topic for every node of the selection."""
    cmd = Command(id=job.id, cmd="run", nodes=tuple(nodes), job=job, sender=session.client_id, t=time.time())
    session.command(session.topics.cluster_cmd(), cmd)


def resend(session: Session, job_id: str, nodes: list[str]) -> None:
    """Ask ``nodes`` to publish again what they said about ``job_id`` (their accepted, started and verdict
    events, with the same seq); a node that never received the job refuses it for good, as its verdict."""
    _about(session, "resend", job_id, nodes)


def catch_up(session: Session, follower: Follower) -> None:
    """When the session has come back after losing the broker, whatever the nodes published meanwhile never
    reached it (a broker crash also loses what it had queued): ask the nodes still in the job to say it again.
    The session keeps the order of its own messages, so a node meets the job before it is asked about it."""
    if follower.connects is None:
        follower.connects = session.connects
    elif session.connects != follower.connects:
        follower.connects = session.connects
        resend(session, follower.job_id, [r.node for r in follower.runs.values() if not r.ended])


def cancel(session: Session, job_id: str, nodes: list[str]) -> None:
    _about(session, "cancel", job_id, nodes)


def _about(session: Session, what: Literal["cancel", "resend"], job_id: str, nodes: list[str]) -> None:
    """One command about a job for ``nodes`` on the cluster topic (none when ``nodes`` is empty)."""
    if nodes:
        cmd = Command(
            id=f"{job_id}.{what}", cmd=what, nodes=tuple(nodes), job_id=job_id, sender=session.client_id, t=time.time()
        )
        session.command(session.topics.cluster_cmd(), cmd)
