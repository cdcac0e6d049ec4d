"""A leader's launches through its agent (nodeagent/mpi/launch_socket.py, relay.py, launcher.py): the real launcher
over a real Unix socket, the relay driven as the agent's loop drives it, the broker replaced by a list.

What the job can do through the socket is what mpirun does: one launch per member of the running leader job whose
token it holds, from a process of that job, with the daemon's own command line; signed by the node's key, never
by anything the job holds."""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodeagent.config import MpiSection
from nodeagent.mpi import launcher
from nodeagent.mpi.launch_socket import NO_UID, Conn, LaunchSocket, Peer, jobs_uid
from nodeagent.mpi.leaders import Leaders
from nodeagent.mpi.relay import ANSWER_TIMEOUT_S, LaunchRelay
from nodeagent.mpi.unix_path import MAX_SUN_PATH, unix_address
from nodeagent.protocol import OFFLINE, ONLINE, Command, Event, Topics, decode, encode, envelope
from nodeagent.security.keys import SigningKey
from tests.mpi_recorded import member_line
from tests.waits import wait_until

T = Topics("lab")
LAUNCHER = f"{sys.executable} -m nodeagent.mpi.launcher"
MPI = MpiSection(launch_agent=LAUNCHER)
ORTED = member_line(LAUNCHER)
NODE_KEY = SigningKey.generate("node1")


@dataclass
class Jobs:
    running: tuple[str, ...] = ("j1",)
    queued: tuple[str, ...] = ()
    session: int | None = field(default_factory=lambda: os.getsid(0))

    def session_of(self, job_id: str) -> int | None:
        return self.session if job_id in self.running else None


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Leader:
    """node1 leading job j1 over node1, node2 and node3: its relay, its socket, what it published."""

    relay: LaunchRelay
    socket: LaunchSocket
    token: str
    jobs: Jobs
    clock: Clock
    leaders: Leaders
    inbox: queue.SimpleQueue[tuple[str, Any, Any]]
    published: list[tuple[str, bytes]] = field(default_factory=list)
    subscribed: set[str] = field(default_factory=set)

    def pump(self, timeout_s: float = 5.0) -> None:
        """What the agent's loop does with the socket's items, up to and including the next request."""
        while True:
            what, conn, request = self.inbox.get(timeout=timeout_s)
            if what == "request":
                self.relay.request(conn, request)
                return
            self.relay.closed(conn)

    def env(self, **changes: str) -> dict[str, str]:
        env = {"PICLUSTER_LAUNCH_SOCKET": str(self.socket.path), "PICLUSTER_LAUNCH_TOKEN": self.token}
        return env | {"PICLUSTER_JOB": "j1"} | changes

    def event(self, node: str, kind: str, job: str, **fields: Any) -> None:
        self.relay.message(T.events(node), encode(Event(node=node, seq=1, t=0.0, kind=kind, job=job, **fields)))


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[Leader]:
    leaders, jobs, clock = Leaders(), Jobs(), Clock()
    token = leaders.add("j1", ["node1", "node2", "node3"])
    inbox: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
    sock = LaunchSocket(
        lambda: os.geteuid(),
        on_request=lambda conn, request: inbox.put(("request", conn, request)),
        on_closed=lambda conn: inbox.put(("closed", conn, None)),
        parent=tmp_path,
    )
    published: list[tuple[str, bytes]] = []
    subscribed: set[str] = set()
    relay = LaunchRelay(
        "node1",
        T,
        MPI,
        leaders,
        jobs,
        NODE_KEY,
        publish=lambda topic, payload: published.append((topic, payload)),
        subscribe=lambda topic, qos: subscribed.add(topic),
        unsubscribe=subscribed.discard,
        clock=clock,
    )
    sock.start()
    try:
        yield Leader(relay, sock, token, jobs, clock, leaders, inbox, published, subscribed)
    finally:
        sock.close()


class Launch:
    """picluster-mpi-launch as mpirun runs it, in a thread; ``status`` once it exits."""

    def __init__(self, env: dict[str, str], node: str = "node2", words: list[str] | None = None) -> None:
        self.status: int | None = None
        self.error = ""
        self._thread = threading.Thread(target=self._run, args=(node, words or ORTED, env), daemon=True)
        self._thread.start()

    def _run(self, node: str, words: list[str], env: dict[str, str]) -> None:
        try:
            self.status = launcher.launch(node, words, env)
        except launcher.LaunchFailed as exc:
            self.status, self.error = exc.status, str(exc)

    def wait(self) -> int | None:
        self._thread.join(10)
        return self.status


def test_a_launch_is_signed_by_the_node_published_to_the_member_and_followed_to_its_end(leader: Leader) -> None:
    run = Launch(leader.env())
    leader.pump()
    ((topic, payload),) = leader.published
    assert topic == T.launch("node2", "node1")
    env = envelope.unpack(payload)
    assert env.topic == topic and env.key == NODE_KEY.public.id and NODE_KEY.public.verify(env.sig, env.signed_bytes())
    cmd = decode(env.body, Command)
    assert (cmd.cmd, cmd.job_id, cmd.sender, list(cmd.argv)) == ("launch", "j1", "node1", ORTED)
    assert leader.subscribed == {T.events("node2"), T.status("node2")}
    leader.relay.message(T.status("node2"), ONLINE.encode())
    leader.event("node2", "accepted", cmd.id)
    leader.event("node2", "progress", "j1")
    assert run.status is None  # still running: the daemon lives
    leader.event("node2", "finished", "j1", result={"passed": True})
    assert run.wait() == 0
    assert leader.subscribed == set()  # no member followed any more


def test_the_members_refusal_and_its_daemons_failure_end_the_launcher_with_1(leader: Leader) -> None:
    refused, failed = Launch(leader.env()), Launch(leader.env(), node="node3")
    leader.pump()
    leader.pump()
    ids = {topic: decode(envelope.unpack(payload).body, Command).id for topic, payload in leader.published}
    leader.event("node2", "rejected", ids[T.launch("node2", "node1")], reason="launch refused: MCA parameter x")
    assert refused.wait() == 1 and "node2 refused the MPI daemon: launch refused: MCA parameter x" in refused.error
    leader.event("node3", "accepted", ids[T.launch("node3", "node1")])
    leader.event("node3", "failed", "j1", reason="exit 9")
    assert failed.wait() == 1 and "ended failed: exit 9" in failed.error


def test_an_offline_or_silent_member_ends_the_launcher_like_an_unreachable_host(leader: Leader) -> None:
    gone, silent = Launch(leader.env()), Launch(leader.env(), node="node3")
    leader.pump()
    leader.pump()
    leader.relay.message(T.status("node2"), OFFLINE.encode())
    assert gone.wait() == 255 and "node node2 is offline" in gone.error
    leader.clock.now += ANSWER_TIMEOUT_S + 1
    leader.relay.tick()
    assert silent.wait() == 255 and "did not answer the launch within 30 s" in silent.error


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"PICLUSTER_LAUNCH_TOKEN": "guessed"}, "no running leader job 'j1' with that token"),
        ({"PICLUSTER_JOB": "j2"}, "no running leader job 'j2'"),
        ({"node": "node9"}, "'node9' is not a member of job j1 (its nodes: node1,node2,node3)"),
        ({"node": "node1"}, "'node1' is not a member of job j1"),  # itself: mpirun starts its own ranks
        ({"words": ["bash", "-c", "id"]}, "not Open MPI's daemon as mpirun starts it"),
        ({"words": [*ORTED, "-mca", "mca_base_component_path", "/tmp"]}, "not Open MPI's daemon"),
    ],
)
def test_a_request_outside_what_mpirun_does_is_refused_and_nothing_is_published(
    leader: Leader, change: dict[str, Any], why: str
) -> None:
    node, words = change.pop("node", "node2"), change.pop("words", None)
    run = Launch(leader.env(**change), node=node, words=words)
    leader.pump()
    assert run.wait() == 1 and why in run.error, run.error
    assert leader.published == [] and leader.subscribed == set()


def test_a_process_outside_the_job_is_refused_even_with_its_token(leader: Leader) -> None:
    leader.jobs.session = os.getsid(0) + 1  # the job runs in another session than this test
    run = Launch(leader.env())
    leader.pump()
    assert run.wait() == 1 and f"(pid {os.getpid()}) is not a process of job j1" in run.error
    assert leader.published == []


def test_each_member_is_launched_once(leader: Leader) -> None:
    first, second = Launch(leader.env()), Launch(leader.env())
    leader.pump()
    leader.pump()
    pause = lambda: time.sleep(0.01)  # noqa: E731 (the launchers are threads; nothing to pump)
    refused = wait_until(
        "a refusal", pause, lambda: next((r for r in (first, second) if r.status is not None), None), 5
    )
    assert refused.status == 1 and "on node2 was asked for already" in refused.error
    assert len(leader.published) == 1


def test_the_token_is_void_once_the_job_has_ended(leader: Leader) -> None:
    running = Launch(leader.env())
    leader.pump()
    leader.jobs.running = ()
    leader.relay.tick()  # the job ended: its token goes, its launchers are told
    assert running.wait() == 1 and "the leader job j1 ended" in running.error
    assert leader.leaders.jobs == {}
    leader.jobs.running = ("j1",)  # even if an id came back, the old token would not
    late = Launch(leader.env())
    leader.pump()
    assert late.wait() == 1 and "with that token" in late.error


def test_another_user_cannot_even_ask(tmp_path: Path) -> None:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sock = LaunchSocket(lambda: os.geteuid() + 4242, on_request=lambda c, r: inbox.put(r), parent=tmp_path)
    sock.start()
    try:
        assert sock.path.stat().st_uid == os.geteuid() + 4242 and sock.path.stat().st_mode & 0o777 == 0o600
        assert sock.directory.stat().st_mode & 0o777 == 0o711
        env = {"PICLUSTER_LAUNCH_SOCKET": str(sock.path), "PICLUSTER_LAUNCH_TOKEN": "t", "PICLUSTER_JOB": "j1"}
        run = Launch(env)
        assert run.wait() == 1 and f"uid {os.geteuid()} may not launch" in run.error
        assert inbox.empty()
    finally:
        sock.close()
    assert not sock.directory.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent looks the jobs user up")
def test_without_a_jobs_user_no_one_may_launch_not_even_root(tmp_path: Path) -> None:
    assert jobs_uid("picluster-no-such-user") == NO_UID
    sock = LaunchSocket(lambda: jobs_uid("picluster-no-such-user"), on_request=lambda c, r: None, parent=tmp_path)
    sock.start()
    try:
        assert sock.path.stat().st_uid == 0 and sock.path.stat().st_mode & 0o777 == 0o600
        run = Launch({"PICLUSTER_LAUNCH_SOCKET": str(sock.path), "PICLUSTER_LAUNCH_TOKEN": "t", "PICLUSTER_JOB": "j1"})
        assert run.wait() == 1 and "uid 0 may not launch" in run.error
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("line", "why"), [(b"not json\n", "not a JSON object"), (b"[1, 2]\n", "not a JSON object"), (b"x" * 70000, "over")]
)
def test_a_malformed_request_is_refused(leader: Leader, line: bytes, why: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        with unix_address(str(leader.socket.path)) as address:
            s.connect(address)
        s.sendall(line)
        answer = s.makefile("rb").readline()
    assert b'"refused"' in answer and why.encode() in answer
    assert leader.inbox.get(timeout=5)[0] == "closed"


def test_a_launcher_that_hangs_up_is_no_longer_followed(leader: Leader) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        with unix_address(str(leader.socket.path)) as address:
            s.connect(address)
        request = {"job": "j1", "token": leader.token, "node": "node2", "argv": ORTED}
        s.sendall(json.dumps(request).encode() + b"\n")
        leader.pump()
        assert leader.subscribed
    what, conn, _ = leader.inbox.get(timeout=5)
    assert what == "closed"
    leader.relay.closed(conn)  # the hang-up
    assert leader.subscribed == set()


def test_without_the_agent_the_launcher_exits_like_an_unreachable_host(tmp_path: Path) -> None:
    env = {"PICLUSTER_LAUNCH_SOCKET": str(tmp_path / "none.sock"), "PICLUSTER_LAUNCH_TOKEN": "t", "PICLUSTER_JOB": "j"}
    assert launcher.main(["node2", *ORTED]) == 255  # nothing in this process's environment
    run = Launch(env)
    assert run.wait() == 255 and "cannot reach the agent" in run.error


def test_the_kernel_says_who_connected(leader: Leader) -> None:
    Launch(leader.env())
    what, conn, _ = leader.inbox.get(timeout=5)
    assert what == "request" and isinstance(conn, Conn)
    assert conn.peer == Peer(os.getpid(), os.geteuid(), os.getegid())
    conn.close()


def test_a_socket_deeper_than_a_unix_address_allows_still_serves(tmp_path: Path) -> None:
    # sun_path holds 107 bytes; $RUNTIME_DIRECTORY or a test's temporary directory may be deeper than that.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    sock = LaunchSocket(os.geteuid, on_request=lambda c, r: inbox.put(r), parent=deep)
    sock.start()
    try:
        assert len(str(sock.path)) > MAX_SUN_PATH
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, unix_address(str(sock.path)) as address:
            s.connect(address)
            s.sendall(b'{"job": "j1", "token": "t", "node": "n2", "argv": []}\n')
            assert inbox.get(timeout=5)["job"] == "j1"
    finally:
        sock.close()
