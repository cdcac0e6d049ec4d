"""``picluster-mpi-launch``: Open MPI's ``plm_rsh_agent`` that starts remote daemons through the agents, not SSH.

mpirun on the leader calls ``picluster-mpi-launch <node> orted <args...>``. This program asks its own node's agent,
over the agent's Unix socket, to have ``<node>``'s agent start that daemon for the running job; the agent checks
the request, signs it with the node's key and publishes it, and relays the member's answers. This program then
lives exactly as long as the daemon does: it exits 0 when the node reports the job's part finished, 1 when the
launch is refused or the daemon fails (with the reason on stderr), and 255, like ssh, when the node goes offline,
never answers, or the agent cannot be reached. mpirun treats the daemon as gone when this program exits.

It holds no broker login and no key: it reads from the environment the runner gives the leader's job only
``PICLUSTER_LAUNCH_SOCKET`` (the agent's socket), ``PICLUSTER_LAUNCH_TOKEN`` (valid while the job runs) and
``PICLUSTER_JOB``. Standard library only, so mpirun's many launchers start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping

from nodeagent.mpi.unix_path import unix_address

ENV_SOCKET, ENV_TOKEN, ENV_JOB = "PICLUSTER_LAUNCH_SOCKET", "PICLUSTER_LAUNCH_TOKEN", "PICLUSTER_JOB"
UNREACHABLE = 255  # what ssh returns when it cannot reach the host
MAX_LINE = 64 * 1024
EXIT = {"accepted": None, "end": None, "rejected": 1, "refused": 1, "offline": UNREACHABLE, "unreachable": UNREACHABLE}


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
    """Ask for the daemon ``words`` on ``target`` and follow it to its end; the exit status for mpirun."""
    path = _env(env, ENV_SOCKET)
    request = {"job": _env(env, ENV_JOB), "token": _env(env, ENV_TOKEN), "node": target, "argv": words}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except OSError as exc:
            raise LaunchFailed(f"cannot reach the agent at {path}: {exc.strerror or exc}", UNREACHABLE) from None
        with contextlib.suppress(OSError):  # refused at once: the agent's answer is still there to read
            sock.sendall((json.dumps(request) + "\n").encode())
        try:
            return _follow(sock.makefile("rb"), target)
        except OSError as exc:
            raise LaunchFailed(f"lost the agent at {path}: {exc.strerror or exc}", UNREACHABLE) from None
    finally:
        sock.close()


def _follow(answers: Iterable[bytes], target: str) -> int:
    for raw in answers:
        if len(raw) > MAX_LINE:
            raise LaunchFailed("the agent's answer is too long", UNREACHABLE)
        try:
            answer = json.loads(raw)
            event = answer["event"]
        except (ValueError, KeyError, TypeError):
            raise LaunchFailed("the agent's answer is not one picluster-mpi-launch understands", UNREACHABLE) from None
        reason = str(answer.get("reason", ""))
        if event == "end":
            if answer.get("kind") == "finished":
                return 0
            raise LaunchFailed(reason or f"{target}: the job's MPI daemon ended")
        status = EXIT.get(event, UNREACHABLE)
        if status is not None:
            raise LaunchFailed(reason or f"{target}: {event}", status)
    raise LaunchFailed(f"the agent hung up while {target}'s MPI daemon ran (did the agent stop?)", UNREACHABLE)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: picluster-mpi-launch NODE orted ARGS... (Open MPI's plm_rsh_agent)", file=sys.stderr)
        return 2
    try:
        return launch(args[0], args[1:], os.environ)
    except LaunchFailed as exc:
        print(f"picluster-mpi-launch: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
