"""``picluster-mpi-launch``: Open MPI's ``plm_rsh_agent`` that starts remote daemons through the agents, not SSH.

mpirun on the leader calls ``picluster-mpi-launch <node> orted <args...>``. This program asks ``<node>``'s agent
over MQTT to start that daemon for the running job, then lives exactly as long as the daemon does: it exits 0
when the node reports the job's part finished, 1 when the launch is refused or the daemon fails (with the
node's reason on stderr), and 255, like ssh, when the node goes offline or never answers. mpirun treats the
daemon as gone when this program exits.

It reads from the environment the runner gives the leader's job: ``PICLUSTER_BROKER``, ``PICLUSTER_CLUSTER``,
``PICLUSTER_NODE`` (the leader), ``PICLUSTER_JOB`` and optionally ``PICLUSTER_MQTT_USERNAME`` /
``PICLUSTER_MQTT_PASSWORD`` / ``PICLUSTER_MQTT_CA_FILE``.
"""

from __future__ import annotations

import os
import queue
import secrets
import sys
import time
from collections.abc import Mapping

from nodeagent.errors import ProtocolError
from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker, Credentials
from nodeagent.protocol import OFFLINE, Command, Event, Topics, decode, encode

CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 30.0
UNREACHABLE = 255  # what ssh returns when it cannot reach the host


class LaunchFailed(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _env(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "")
    if not value:
        raise LaunchFailed(
            f"{key} is not set: picluster-mpi-launch runs under mpirun started by a picluster agent", UNREACHABLE
        )
    return value


def launch(target: str, words: list[str], env: Mapping[str, str]) -> int:
    """Ask ``target`` to start the daemon ``words`` and follow it to its end; the exit status for mpirun."""
    topics = Topics(_env(env, "PICLUSTER_CLUSTER"))
    leader, job = _env(env, "PICLUSTER_NODE"), _env(env, "PICLUSTER_JOB")
    broker = Broker.parse(_env(env, "PICLUSTER_BROKER"))
    launch_id = f"{job[:64]}.launch-{secrets.token_hex(3)}"
    inbox: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
    link = Link(
        f"picluster-launch-{leader}-{os.getpid()}"[:64],
        broker,
        credentials=Credentials.from_env(env),
        on_message=lambda t, p, r: inbox.put((t, p, r)),
    )
    link.subscribe(topics.events(target), qos=1)
    link.subscribe(topics.status(target), qos=1)
    link.start()
    try:
        if not link.wait_connected(CONNECT_TIMEOUT_S):
            raise LaunchFailed(f"cannot reach the broker at {broker} to launch on {target}", UNREACHABLE)
        cmd = Command(id=launch_id, cmd="launch", job_id=job, argv=tuple(words), sender=leader, t=time.time())
        link.publish(topics.launch(target, leader), encode(cmd), qos=1)
        return _follow(inbox, topics, target, job, launch_id)
    finally:
        link.stop()


Inbox = queue.SimpleQueue[tuple[str, bytes, bool]]


def _follow(inbox: Inbox, topics: Topics, target: str, job: str, launch_id: str) -> int:
    answer_by = time.monotonic() + ANSWER_TIMEOUT_S
    accepted = False
    while True:
        try:
            topic, payload, _ = inbox.get(timeout=1.0)
        except queue.Empty:
            if not accepted and time.monotonic() > answer_by:
                raise LaunchFailed(
                    f"{target} did not answer the launch within {ANSWER_TIMEOUT_S:g} s", UNREACHABLE
                ) from None
            continue
        if topic == topics.status(target):
            if payload.decode(errors="replace") == OFFLINE:
                raise LaunchFailed(f"node {target} is offline (its agent stopped or lost the broker)", UNREACHABLE)
            continue
        try:
            event = decode(payload, Event)
        except ProtocolError:
            continue
        if event.job == launch_id:
            if event.kind == "rejected":
                raise LaunchFailed(f"{target} refused the MPI daemon: {event.reason}")
            accepted = accepted or event.kind == "accepted"
        elif event.job == job and event.terminal:
            if event.kind == "finished":
                return 0
            raise LaunchFailed(f"{target}: the job's MPI daemon ended {event.kind}: {event.reason}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: picluster-mpi-launch NODE orted ARGS... (Open MPI's plm_rsh_agent)", file=sys.stderr)
        return 2
    try:
        return launch(args[0], args[1:], os.environ)
    except (LaunchFailed, ProtocolError, ValueError) as exc:
        print(f"picluster-mpi-launch: {exc}", file=sys.stderr)
        return exc.status if isinstance(exc, LaunchFailed) else UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
