"""The agent's side door for a leader job's MPI launcher: a Unix socket only the jobs user can reach.

It lives in a fresh directory under ``$RUNTIME_DIRECTORY`` (the unit's ``/run/picluster``) or the system's temp
directory, owned by the agent, mode 0711 (reachable, not listable, and no one else can put anything in it). The
socket belongs to the jobs user, mode 0600: only that user and root can connect. The kernel's ``SO_PEERCRED``
says who did; a connection from another uid is closed at once. What a connection may ask is the relay's
(``relay.py``) to judge: one launch, for the running leader job the caller belongs to, with that job's token.

One JSON object per line, UTF-8, each way; a request at most ``MAX_LINE`` bytes, sent within ``REQUEST_S``:

    request  {"job": ID, "token": T, "node": MEMBER, "argv": ["orted", ...]}
    answers  {"event": "accepted"} then one of {"event": "end", "kind": "finished"|"failed"|..., "reason": ...},
             {"event": "rejected"|"refused"|"offline"|"unreachable", "reason": ...}; then the agent hangs up.

One thread serves every connection (``selectors``), so a thousand launchers cost a thousand sockets, not threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.mpi.unix_path import unix_address

log = logging.getLogger("picluster.mpi")

SOCKET_NAME = "launch.sock"
MAX_LINE = 64 * 1024
REQUEST_S = 10.0  # a connection that has not sent its request by then is closed
NO_UID = -1  # matches no peer; os.chown leaves the owner as it is
MAX_CONNECTIONS = 2048  # a cluster of 1,050 nodes has 1,049 launchers on its leader at once


def jobs_uid(user: str) -> int:
    """The uid jobs run as (nodeagent/jobs/runner.py): ``jobs.user`` when the agent is root, else the agent's own."""
    if os.geteuid() != 0:
        return os.geteuid()
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return NO_UID  # no such user: the runner refuses every job, so no launcher may connect either


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass(eq=False)
class Conn:
    """One launcher's connection. ``send`` and ``close`` may be called from any thread."""

    sock: socket.socket
    peer: Peer
    opened: float
    buffer: bytearray = field(default_factory=bytearray)
    asked: bool = False  # its one request has been read
    _lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def send(self, answer: dict[str, Any]) -> None:
        line = (json.dumps(answer) + "\n").encode()
        with self._lock:
            if self.closed:
                return
            try:
                self.sock.sendall(line)
            except OSError:
                self._hang_up()

    def close(self) -> None:
        """Hang up; the server thread notices the end and lets the socket go."""
        with self._lock:
            self._hang_up()

    def _hang_up(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class LaunchSocket:
    """Listens for launchers; ``on_request(conn, request)`` gets each well-formed request (on this thread: hand it
    to the agent's loop), ``on_closed(conn)`` each connection that ended. ``allowed_uid()``: the jobs user's uid."""

    def __init__(
        self,
        allowed_uid: Callable[[], int],
        on_request: Callable[[Conn, dict[str, Any]], None],
        on_closed: Callable[[Conn], None] = lambda conn: None,
        *,
        parent: Path | None = None,
    ) -> None:
        self.allowed_uid = allowed_uid
        self.on_request = on_request
        self.on_closed = on_closed
        base = parent or Path(os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or tempfile.gettempdir())
        self.directory = Path(tempfile.mkdtemp(prefix="picluster-launch-", dir=base))
        os.chmod(self.directory, 0o711)
        self.path = self.directory / SOCKET_NAME
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(str(self.path)) as address:
            self._listener.bind(address)
        self._own(self.path)
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: dict[int, Conn] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="launch-socket", daemon=True)

    def _own(self, path: Path) -> None:
        """The jobs user's socket, 0600 (when that is another user than the agent's)."""
        uid = self.allowed_uid()
        if uid != os.geteuid():
            os.chown(path, uid, -1)
        os.chmod(path, 0o600)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for conn in list(self._conns.values()):
            self._drop(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- the server thread -------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop:
            try:
                ready = self._selector.select(timeout=1.0)
            except OSError:
                return
            for key, _ in ready:
                try:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._readable(key.data)
                except Exception:  # a bug here must not end every launch of every job
                    log.exception("event=launch_socket_error")
            self._expire(time.monotonic())

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        conn = Conn(sock, Peer(pid, uid, gid), time.monotonic())
        if uid != self.allowed_uid() or len(self._conns) >= MAX_CONNECTIONS:
            why = "too many launchers at once" if uid == self.allowed_uid() else f"uid {uid} may not launch"
            log.warning("event=launch_socket_refused pid=%d uid=%d reason=%r", pid, uid, why)
            conn.send({"event": "refused", "reason": why})
            sock.close()
            return
        sock.setblocking(False)
        self._conns[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: Conn) -> None:
        try:
            chunk = conn.sock.recv(MAX_LINE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk or conn.closed:
            self._drop(conn)
            return
        if conn.asked:
            return  # one request per connection; anything after it is ignored
        conn.buffer += chunk
        line, newline, _ = conn.buffer.partition(b"\n")
        if not newline:
            if len(conn.buffer) > MAX_LINE:
                self._bad(conn, f"request over {MAX_LINE} bytes")
            return
        conn.asked = True
        conn.buffer.clear()
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._bad(conn, "the request is not a JSON object on one line")
            return
        self.on_request(conn, request)

    def _bad(self, conn: Conn, why: str) -> None:
        conn.send({"event": "refused", "reason": why})
        self._drop(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if not c.asked and now - c.opened > REQUEST_S]:
            self._bad(conn, f"no request within {REQUEST_S:g} s")

    def _drop(self, conn: Conn) -> None:
        fd = next((fd for fd, c in self._conns.items() if c is conn), None)
        if fd is None:
            return
        del self._conns[fd]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        conn.close()
        conn.sock.close()
        self.on_closed(conn)


def open_launch_socket(allowed_uid: Callable[[], int], put: Callable[[tuple[Any, ...]], None]) -> LaunchSocket | None:
    """The agent's launch socket, serving: requests and ended connections go to ``put`` (the agent's inbox) as
    ``("launch", conn, request)`` and ``("launch_closed", conn)``. None when it cannot be made (logged)."""
    try:
        sock = LaunchSocket(
            allowed_uid,
            on_request=lambda conn, request: put(("launch", conn, request)),
            on_closed=lambda conn: put(("launch_closed", conn)),
        )
    except OSError as exc:
        log.error(
            "event=launch_socket_failed reason=%r effect='this node cannot lead a cluster HPL job'",
            exc.strerror or str(exc),
        )
        return None
    sock.start()
    return sock
