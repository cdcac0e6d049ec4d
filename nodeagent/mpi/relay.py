"""The leader's side of a cluster job's launches: what its launcher asks over the agent's socket, checked, signed
with the node's key and published to the member; the member's answers relayed back to the launcher.

A request passes only when: the job it names is a leader job of this node that is running, the token is that
job's (``leaders.py``), the caller is a process of that job (its session, from ``SO_PEERCRED``'s pid), the node
is one of the job's members whose daemon was not asked for yet, and the argv is what the members' allowlist
accepts (``orted.daemon_argv``; the member checks it again, and pins ``orte_hnp_uri`` to this node). So the job
holds no broker login and no key: the most its processes can do through the socket is what mpirun does.
Everything here runs on the agent's loop thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nodeagent.config import MpiSection
from nodeagent.errors import ProtocolError, clip, echo
from nodeagent.mpi.cluster_kind import launch_agent
from nodeagent.mpi.launch_socket import Conn
from nodeagent.mpi.leaders import Leaders
from nodeagent.mpi.orted import BadDaemonCommand, daemon_argv
from nodeagent.protocol import OFFLINE, Command, Event, Topics, decode, encode
from nodeagent.protocol.topics import NAME_RE
from nodeagent.security.keys import SigningKey
from nodeagent.security.seal import seal

log = logging.getLogger("picluster.mpi")

ANSWER_TIMEOUT_S = 30.0  # a member that has not answered the launch by then is unreachable (the launcher: 255)
MAX_ARGV_WORDS = 1024
MAX_WORD = 4096


class Jobs(Protocol):
    """What the relay asks of the runner."""

    @property
    def running(self) -> tuple[str, ...]: ...

    @property
    def queued(self) -> tuple[str, ...]: ...

    def session_of(self, job_id: str) -> int | None: ...


@dataclass
class _Follow:
    conn: Conn
    job_id: str
    node: str
    launch_id: str
    deadline: float
    accepted: bool = False


class LaunchRelay:
    """One node's relay. ``publish(topic, payload)`` sends QoS 1; ``subscribe``/``unsubscribe`` follow members."""

    def __init__(
        self,
        node: str,
        topics: Topics,
        mpi: MpiSection,
        leaders: Leaders,
        jobs: Jobs,
        key: SigningKey | None,
        *,
        publish: Callable[[str, bytes], Any],
        subscribe: Callable[[str, int], None],
        unsubscribe: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        getsid: Callable[[int], int] = os.getsid,
    ) -> None:
        self.node, self.topics, self.mpi, self.leaders, self.jobs, self.key = node, topics, mpi, leaders, jobs, key
        self.publish, self.subscribe, self.unsubscribe = publish, subscribe, unsubscribe
        self.clock, self.getsid = clock, getsid
        self._follows: list[_Follow] = []
        self._watching: dict[str, int] = {}  # member -> follows on it (its events and status are subscribed)

    # --- from the socket ---------------------------------------------------------------------------------------
    def request(self, conn: Conn, req: dict[str, Any]) -> None:
        """A launcher's request: refused with the reason, or signed, published and followed."""
        try:
            job_id, node, argv = self._check(conn, req)
        except _Refused as exc:
            log.warning(
                "event=launch_request_refused pid=%d job=%s node=%s reason=%r",
                *(conn.peer.pid, clip(str(req.get("job")), 80), clip(str(req.get("node")), 80), exc.reason),
            )
            conn.send({"event": "refused", "reason": exc.reason})
            conn.close()
            return
        launch_id = f"{job_id[:64]}.launch-{secrets.token_hex(3)}"
        cmd = Command(id=launch_id, cmd="launch", job_id=job_id, argv=tuple(argv), sender=self.node, t=time.time())
        topic = self.topics.launch(node, self.node)
        body = encode(cmd)
        self._watch(node)
        self.publish(topic, seal(self.key, topic, body) if self.key is not None else body)
        self.leaders.jobs[job_id].launched.add(node)
        self._follows.append(_Follow(conn, job_id, node, launch_id, self.clock() + ANSWER_TIMEOUT_S))
        log.info("event=launch_sent job=%s node=%s launch=%s signed=%s", job_id, node, launch_id, self.key is not None)

    def _check(self, conn: Conn, req: dict[str, Any]) -> tuple[str, str, list[str]]:
        job_id, token, node, argv = (req.get(k) for k in ("job", "token", "node", "argv"))
        if not (isinstance(job_id, str) and isinstance(token, str) and isinstance(node, str)):
            raise _Refused('expected {"job": ID, "token": T, "node": MEMBER, "argv": [...]}')
        if not isinstance(argv, list) or not all(isinstance(w, str) and len(w) <= MAX_WORD for w in argv):
            raise _Refused(f"argv must be a list of strings of at most {MAX_WORD} characters")
        if len(argv) > MAX_ARGV_WORDS:
            raise _Refused(f"argv has {len(argv)} words, more than {MAX_ARGV_WORDS}")
        job = self.leaders.get(job_id, token)
        if job is None or job_id not in self.jobs.running:
            raise _Refused(f"no running leader job {echo(job_id, 80)} with that token here (a token ends with its job)")
        session = self.jobs.session_of(job_id)
        try:
            caller = self.getsid(conn.peer.pid)
        except OSError:
            caller = -1
        if session is None or caller != session:
            raise _Refused(f"the caller (pid {conn.peer.pid}) is not a process of job {job_id}")
        if not NAME_RE.match(node) or node not in job.hosts[1:]:
            raise _Refused(f"{echo(node, 80)} is not a member of job {job_id} (its nodes: {','.join(job.hosts)})")
        if node in job.launched:
            raise _Refused(f"the MPI daemon of job {job_id} on {node} was asked for already")
        try:
            daemon_argv(argv, rsh_agents=(launch_agent(self.mpi), self.mpi.ssh))
        except BadDaemonCommand as exc:
            raise _Refused(f"not Open MPI's daemon as mpirun starts it: {exc}") from None
        return job_id, node, argv

    def closed(self, conn: Conn) -> None:
        """A launcher hung up (mpirun ended it, or it ended): stop following its member."""
        for follow in [f for f in self._follows if f.conn is conn]:
            self._done(follow)

    # --- from the broker --------------------------------------------------------------------------------------
    def message(self, topic: str, payload: bytes) -> bool:
        """A member's event or status; True when it was a followed member's event (nobody else wants those)."""
        parsed = self.topics.parse(topic)
        if parsed is None or parsed[0] not in self._watching or parsed[1] not in ("events", "status"):
            return False
        node, leaf = parsed
        if leaf == "status":
            if payload == OFFLINE.encode():
                for follow in [f for f in self._follows if f.node == node]:
                    self._answer(follow, "offline", f"node {node} is offline (its agent stopped or lost the broker)")
            return False  # other parts of the agent may follow statuses too
        try:
            event = decode(payload, Event)
        except ProtocolError:
            return True
        for follow in [f for f in self._follows if f.node == node]:
            if event.job == follow.launch_id:
                if event.kind == "rejected":
                    self._answer(follow, "rejected", f"{node} refused the MPI daemon: {event.reason}")
                elif event.kind == "accepted" and not follow.accepted:
                    follow.accepted = True
                    follow.conn.send({"event": "accepted"})
            elif event.job == follow.job_id and event.terminal:
                why = f": {event.reason}" if event.reason else ""
                self._answer(follow, "end", f"{node}: the job's MPI daemon ended {event.kind}{why}", kind=event.kind)
        return True

    # --- every tick -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Members that never answered are unreachable; tokens of jobs that ended are void."""
        now = self.clock()
        for follow in [f for f in self._follows if not f.accepted and now > f.deadline]:
            why = f"{follow.node} did not answer the launch within {ANSWER_TIMEOUT_S:g} s"
            self._answer(follow, "unreachable", why)
        live = {*self.jobs.running, *self.jobs.queued}
        for job_id in self.leaders.retire(live):
            log.info("event=launch_token_void job=%s", job_id)
        for follow in [f for f in self._follows if f.job_id not in live]:
            self._answer(follow, "end", f"the leader job {follow.job_id} ended", kind="cancelled")

    # --- inside -----------------------------------------------------------------------------------------------
    def _answer(self, follow: _Follow, event: str, reason: str, **more: str) -> None:
        follow.conn.send({"event": event, "reason": reason, **more})
        follow.conn.close()
        self._done(follow)

    def _done(self, follow: _Follow) -> None:
        if follow not in self._follows:
            return
        self._follows.remove(follow)
        left = self._watching[follow.node] - 1
        if left:
            self._watching[follow.node] = left
            return
        del self._watching[follow.node]
        for topic in (self.topics.events(follow.node), self.topics.status(follow.node)):
            self.unsubscribe(topic)

    def _watch(self, node: str) -> None:
        if node not in self._watching:
            self.subscribe(self.topics.events(node), 1)
            self.subscribe(self.topics.status(node), 1)
        self._watching[node] = self._watching.get(node, 0) + 1


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = clip(reason, 600)
