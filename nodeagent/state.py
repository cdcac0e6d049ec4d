"""One state directory, one agent: where a node keeps what must survive a restart, and the lock that keeps it its own.

The state directory holds the event spool and the job ids seen (``spool.sqlite3``), the job directories
(``jobs/``), the frequency-cap marker and, on a simulated node, its Prometheus textfile. Two agents sharing one
would refuse each other's jobs as duplicates and interleave each other's events, so each agent takes an exclusive
``flock`` on ``agent.lock`` in it at start and holds it until it exits; the kernel releases it when the process
ends, however it ends, so a crash leaves nothing stale.

``state_dir_for`` and ``StateLock`` are all a process needs per node: ``picluster-agent run`` calls them once, and
a process that simulates many nodes calls them once per node (``flock`` locks belong to the open file, so two
nodes of one process conflict exactly like two processes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

from nodeagent.errors import PiclusterError

DEFAULT_ROOT = "/var/lib/picluster"
# systemd sets it from the unit's StateDirectory= (/var/lib/picluster in the shipped unit); first path only.
ENV_STATE_DIRECTORY = "STATE_DIRECTORY"
SIM_SUBDIR = "sim"
LOCK_NAME = "agent.lock"
_HOLDER_MAX_BYTES = 256  # what the lock file may say about its holder; anything longer is not ours


def state_root(env: Mapping[str, str] | None = None) -> Path:
    """Where state goes when ``agent.state_dir`` is not set: ``$STATE_DIRECTORY`` (systemd's), else
    /var/lib/picluster."""
    env = os.environ if env is None else env
    first = env.get(ENV_STATE_DIRECTORY, "").split(":")[0].strip()
    return Path(first) if first else Path(DEFAULT_ROOT)


def state_dir_for(configured: str, node_id: str, *, sim: bool, env: Mapping[str, str] | None = None) -> Path:
    """The state directory of node ``node_id``: ``configured`` (``agent.state_dir``, ``--state-dir``) when set;
    otherwise the root (``state_root``), and for a simulated node ``<root>/sim/<node_id>`` so that any number of
    simulated agents on one host each have their own."""
    if configured:
        return Path(configured)
    root = state_root(env)
    return root / SIM_SUBDIR / node_id if sim else root


class StateDirBusy(PiclusterError):
    """Another agent holds the state directory. The message names the holder and the fix."""

    def __init__(self, path: Path, holder: dict[str, str]) -> None:
        who = ", ".join(f"{k} {v}" for k, v in holder.items() if k in ("node", "pid")) or "holder unknown"
        super().__init__(
            f"state directory {path} is in use by another agent ({who}): two agents must never share one. "
            "Give this agent its own with --state-dir DIR (or agent.state_dir in its config file), or stop the "
            "other one"
        )
        self.path = path
        self.holder = holder


class StateLock:
    """The exclusive lock on one state directory, held from ``acquire`` until ``release`` (or the process ends).

    The lock file says who holds it (``node=… pid=…``) so the agent that is refused can name the holder.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, node_id: str, *, pid: int | None = None) -> StateLock:
        """Create ``state_dir`` if needed and lock it. StateDirBusy when another agent holds it; OSError when
        the directory cannot be created or the lock file cannot be opened (the caller decides what that means)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        # O_NOFOLLOW: a link planted in the directory must not make us truncate another file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirBusy(state_dir, read_holder(path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"node={node_id} pid={os.getpid() if pid is None else pid}\n".encode())
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the directory up (the file stays; an unlocked file means nobody holds it)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, str]:
    """``{"node": …, "pid": …}`` from a lock file's ``key=value`` words; empty when it says nothing readable
    (the holder may not have written it yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        text = os.read(fd, _HOLDER_MAX_BYTES).decode("utf-8", "replace")
    finally:
        os.close(fd)
    out = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key in ("node", "pid") and value.isprintable():
            out[key] = value[:64]
    return out
