"""One thread driving many MQTT sessions: paho's external-loop API (``loop_read``, ``loop_write``, ``loop_misc``)
over a ``selectors`` poll, instead of one paho network thread per session.

It exists for ``picluster-agent sim-fleet`` (hundreds of simulated nodes in one process, tests and benchmarks
only); a real node keeps paho's own thread. Each ``Link`` given a ``NetLoop`` registers here on ``start()``. The
loop connects it (and reconnects it with back-off after a loss), reads whenever its socket is readable, writes
whenever paho has output queued, and calls ``loop_misc`` about once a second for keepalives.

Threads: only the loop thread touches the selector and calls paho's network functions. Other threads (the agent
logic, job threads) publish through paho as usual; paho then asks for a write (``on_socket_register_write``),
which lands in a set the loop drains after a wake-up byte on a pipe.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("picluster.netloop")

MISC_INTERVAL_S = 1.0  # paho's keepalive bookkeeping: its own thread does it about this often
CONNECTS_PER_ROUND = 64  # new connections per loop round, so a reconnect storm does not starve the others


class Driven(Protocol):
    """What the loop needs of a session (``Link`` is one)."""

    @property
    def client(self) -> Any:
        """The paho client."""
        ...

    @property
    def reconnect_min_s(self) -> float: ...

    @property
    def reconnect_max_s(self) -> float: ...

    def connect_failed(self, exc: Exception) -> None:
        """A connection attempt raised (broker down, refused): the owner logs it."""
        ...


@dataclass(eq=False)
class _Entry:
    link: Driven
    delay_s: float  # the next back-off
    sock: Any = None
    removed: bool = False
    wants_connect: bool = True


class NetLoop:
    """Drives every registered session's paho client from one thread. ``start()`` once, ``stop()`` at the end."""

    def __init__(self, name: str = "netloop") -> None:
        self.name = name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}  # id(link) -> entry
        self._writes: set[int] = set()  # id(link) of sessions with output queued since the last round
        self._todo: list[Callable[[], None]] = []  # work handed to the loop thread (add, remove)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # (when, tiebreak, what): connects, retries
        self._tiebreak = itertools.count()
        self._woken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_ident = 0
        self._next_misc = 0.0
        self._connects_left = CONNECTS_PER_ROUND

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; sessions still registered are closed without a goodbye (their wills fire)."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for entry in list(self._entries.values()):
            if entry.sock is not None:
                with contextlib.suppress(OSError):
                    entry.sock.close()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def sessions(self) -> int:
        return len(self._entries)

    # --- called by Link (any thread) -----------------------------------------------------------------------------
    def add(self, link: Driven, delay_s: float = 0.0) -> None:
        """Connect ``link`` from the loop, after ``delay_s`` (a fleet staggers its first connections)."""
        entry = _Entry(link, link.reconnect_min_s)
        self._call(lambda: self._add(entry, delay_s))

    def remove(self, link: Driven, flush_s: float = 2.0) -> None:
        """Forget ``link`` once paho has written what it queued (its DISCONNECT), at most ``flush_s`` later."""
        done = threading.Event()
        deadline = time.monotonic() + flush_s

        def check() -> None:
            entry = self._entries.get(id(link))
            if entry is None:
                done.set()
                return
            if entry.sock is not None and link.client.want_write() and time.monotonic() < deadline:
                self._call_later(check)
                return
            entry.removed = True
            self._entries.pop(id(link), None)
            if entry.sock is not None:
                self._forget_sock(entry.sock)
                with contextlib.suppress(OSError):
                    entry.sock.close()
                entry.sock = None
            done.set()

        if threading.get_ident() == self._loop_ident:
            check()
            return
        self._call(check)
        done.wait(flush_s + 1.0)

    def lost(self, link: Driven) -> None:
        """The session dropped (paho's on_disconnect): try again after the back-off."""
        entry = self._entries.get(id(link))
        if entry is not None and not entry.removed:
            self._call(lambda: self._retry(entry))

    def connected(self, link: Driven) -> None:
        """The broker accepted the session: the next loss starts the back-off afresh."""
        entry = self._entries.get(id(link))
        if entry is not None:
            entry.delay_s = link.reconnect_min_s

    def want_write(self, link: Driven) -> None:
        """paho has output for ``link`` (its on_socket_register_write; any thread)."""
        with self._lock:
            self._writes.add(id(link))
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def opened(self, link: Driven, sock: Any) -> None:
        """paho opened a socket for ``link`` (called on the loop thread, inside ``reconnect()``)."""
        entry = self._entries.get(id(link))
        if entry is None or entry.removed:
            return
        stale = self._sel.get_map().get(sock.fileno())
        if stale is not None:  # the fd of a socket closed off the loop thread, now reused
            self._sel.unregister(stale.fileobj)
        entry.sock = sock
        self._sel.register(sock, selectors.EVENT_READ, entry)

    def closed(self, link: Driven, sock: Any) -> None:
        """paho is about to close ``sock``."""
        entry = self._entries.get(id(link))
        if entry is not None and entry.sock is sock:
            entry.sock = None
        self._forget_sock(sock)

    # --- the loop thread -----------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._todo.append(fn)
            self._woken = True
        self._wake()

    def _call_later(self, fn: Callable[[], None], after_s: float = 0.01) -> None:
        """From the loop thread: run ``fn`` in a later round (after a short wait, not a spin)."""
        heapq.heappush(self._timers, (time.monotonic() + after_s, next(self._tiebreak), fn))

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _add(self, entry: _Entry, delay_s: float) -> None:
        self._entries[id(entry.link)] = entry
        self._call_later(lambda: self._attempt(entry), delay_s)

    def _retry(self, entry: _Entry) -> None:
        if entry.removed or entry.wants_connect:
            return
        entry.wants_connect = True
        # Jitter: after a broker restart every session retries, and not all in the same millisecond.
        after_s = entry.delay_s * random.uniform(0.5, 1.0)
        entry.delay_s = min(entry.delay_s * 2, entry.link.reconnect_max_s)
        self._call_later(lambda: self._attempt(entry), after_s)

    def _forget_sock(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(sock)

    def _run(self) -> None:
        self._loop_ident = threading.get_ident()
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:  # one session's bug must not stop every other session's network
                log.exception("event=netloop_error")
                time.sleep(0.05)

    def _round(self) -> None:
        now = time.monotonic()
        timeout = min(max(0.0, self._next_misc - now), MISC_INTERVAL_S)
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - now))
        for key, mask in self._sel.select(timeout):
            entry = key.data
            if entry is None:
                with contextlib.suppress(BlockingIOError, OSError):
                    while os.read(self._wake_r, 4096):
                        pass
                continue
            try:
                if mask & selectors.EVENT_READ:
                    entry.link.client.loop_read()
                if mask & selectors.EVENT_WRITE and entry.sock is not None:
                    self._write(entry)
            except Exception as exc:  # paho 1.6 raises a TLS alert that comes after the handshake, for one
                self._broken(entry, exc)
        with self._lock:
            todo, self._todo = self._todo, []
            writes, self._writes = self._writes, set()
            self._woken = False
        for fn in todo:
            fn()
        for key in writes:
            entry = self._entries.get(key)
            if entry is not None and entry.sock is not None:
                try:
                    self._write(entry)
                except Exception as exc:
                    self._broken(entry, exc)
        self._timers_due()
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + MISC_INTERVAL_S
            for entry in list(self._entries.values()):
                if entry.sock is not None:
                    entry.link.client.loop_misc()

    def _broken(self, entry: _Entry, exc: Exception) -> None:
        """A read or write raised: the owner says why, the socket goes, and the session is tried again."""
        log.debug("event=netloop_session_error reason=%r", exc)
        entry.link.connect_failed(exc)
        with contextlib.suppress(Exception):
            entry.link.client._sock_close()  # paho's own close (it calls back closed()); no public twin
        if entry.sock is not None:
            self.closed(entry.link, entry.sock)
        self._retry(entry)

    def _write(self, entry: _Entry) -> None:
        client = entry.link.client
        client.loop_write()
        sock = entry.sock
        if sock is None:  # the write found the connection gone
            return
        # Checked after loop_write returned: a packet queued while it ran is seen here or asks again itself.
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
        with contextlib.suppress(KeyError, ValueError):
            if self._sel.get_key(sock).events != events:
                self._sel.modify(sock, events, entry)

    def _timers_due(self) -> None:
        now = time.monotonic()
        self._connects_left = CONNECTS_PER_ROUND
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()

    def _attempt(self, entry: _Entry) -> None:
        """One connection attempt (paho's ``reconnect``: a TCP connect, then CONNECT)."""
        if entry.removed or not entry.wants_connect or self._entries.get(id(entry.link)) is not entry:
            return
        if self._connects_left <= 0:
            self._call_later(lambda: self._attempt(entry), 0.001)
            return
        self._connects_left -= 1
        entry.wants_connect = False
        try:
            entry.link.client.reconnect()
        except Exception as exc:  # refused, unreachable, a name that does not resolve
            entry.link.connect_failed(exc)
            self._retry(entry)
            return
        if entry.sock is not None:
            self._write(entry)  # the CONNECT packet


def set_nodelay(sock: Any) -> None:
    """Small request/response messages otherwise wait for Nagle's algorithm (~40 ms a round trip)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
