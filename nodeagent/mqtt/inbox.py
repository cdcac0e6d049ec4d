"""The agent's inbox: what paho's thread, the job threads and signals hand the agent's loop, bounded.

Anyone who reaches the broker can publish faster than a node can decode, and a chassis driver hears every node's
telemetry (1,050 a second in the largest fleet). So received messages wait in two bounded lines:

- **commands** (the node's and the cluster's command topics, MPI launches, Home Assistant): first come, first
  served, at most ``max_commands`` and ``max_command_bytes``; a command that does not fit is dropped and counted.
- **other nodes' messages** (telemetry, status, facts, power): each topic's latest message only, since each one
  replaces the last (a node's new telemetry makes the old one worthless). A topic keeps its place in line when
  its message is replaced, so a chatty node is not served later for it. At most ``max_peer_topics`` topics and
  ``max_peer_bytes``; a new topic that does not fit is dropped and counted.

The loop takes the agent's own items first (connected, reload, hotplug: few, never dropped), then commands, then
other nodes' messages: a flood of telemetry never delays a command, and a flood of commands never delays the
node's own tick (the loop ticks on time whatever waits here). A payload over the decoding limit is dropped on
arrival: it could never be decoded. Drops are counted per reason (``dropped``) and logged at a bounded rate.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from nodeagent.errors import MAX_ECHO, clip
from nodeagent.mqtt.ratelog import RateLog
from nodeagent.protocol.codec import MAX_PAYLOAD_BYTES

log = logging.getLogger("picluster.agent")
drop_log = RateLog(log)

Item = tuple[Any, ...]


class BoundedInbox:
    """A thread-safe queue of the loop's items: ``("message", topic, payload, retained)`` and the agent's own.
    ``is_peer(topic)``: another node's telemetry, status, facts or power (latest per topic kept)."""

    def __init__(
        self,
        is_peer: Callable[[str], bool],
        *,
        max_commands: int = 1000,
        max_command_bytes: int = 4 << 20,
        max_peer_topics: int = 8192,
        max_peer_bytes: int = 8 << 20,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.is_peer = is_peer
        self.max_commands = max_commands
        self.max_command_bytes = max_command_bytes
        self.max_peer_topics = max_peer_topics
        self.max_peer_bytes = max_peer_bytes
        self.max_payload_bytes = max_payload_bytes
        self._own: queue.SimpleQueue[Item] = queue.SimpleQueue()  # put() is safe in a signal handler (SIGHUP)
        self._commands: collections.deque[Item] = collections.deque()
        self._command_bytes = 0
        self._peers: dict[str, Item] = {}  # topic -> its latest message, in order of first arrival
        self._peer_bytes = 0
        self._ready = threading.Condition()
        self.dropped: collections.Counter[str] = collections.Counter()  # reason -> messages dropped
        self.replaced = 0  # other nodes' messages superseded by a newer one before the loop took them

    def put(self, item: Item) -> None:
        """Queue an item (never blocks); a received message that does not fit is dropped and counted. The agent's
        own items may come from a signal handler, which must not wait for the lock its own thread may hold: they
        go on a lock-free queue, and the loop finds them at the latest when its wait times out (≤ 0.5 s)."""
        if item[0] != "message":
            self._own.put(item)
            if self._ready.acquire(blocking=False):
                self._ready.notify()
                self._ready.release()
            return
        with self._ready:
            reason = self._put_message(item)
            if reason:
                self._drop(reason, item[1], len(item[2]))
                return
            self._ready.notify()

    def _put_message(self, item: Item) -> str:
        """Called with the lock held: queue a message, or say why it was dropped."""
        topic, payload = item[1], item[2]
        size = len(payload)
        if size > self.max_payload_bytes:
            return "oversize"
        if self.is_peer(topic):
            old = self._peers.get(topic)
            grown = size - (len(old[2]) if old is not None else 0)
            if old is None and len(self._peers) >= self.max_peer_topics:
                return "peers_full"
            if self._peer_bytes + grown > self.max_peer_bytes:
                return "peers_full"
            if old is not None:
                self.replaced += 1
            self._peers[topic] = item  # an existing topic keeps its place in line
            self._peer_bytes += grown
            return ""
        if len(self._commands) >= self.max_commands or self._command_bytes + size > self.max_command_bytes:
            return "commands_full"
        self._commands.append(item)
        self._command_bytes += size
        return ""

    def _drop(self, reason: str, topic: str, size: int) -> None:
        self.dropped[reason] += 1
        drop_log.warning(
            f"inbox_{reason}",
            "event=message_dropped reason=%s topic=%s bytes=%d dropped_so_far=%d",
            reason,
            clip(topic, MAX_ECHO),
            size,
            self.dropped[reason],
        )

    def get(self, timeout: float) -> Item:
        """The next item (the agent's own, then commands, then other nodes'); raises queue.Empty after ``timeout``
        seconds with nothing to take."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                try:
                    return self._own.get_nowait()
                except queue.Empty:
                    pass
                if self._commands:
                    item = self._commands.popleft()
                    self._command_bytes -= len(item[2])
                    return item
                if self._peers:
                    topic = next(iter(self._peers))
                    item = self._peers.pop(topic)
                    self._peer_bytes -= len(item[2])
                    return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                self._ready.wait(left)

    def __len__(self) -> int:
        with self._ready:
            return self._own.qsize() + len(self._commands) + len(self._peers)
