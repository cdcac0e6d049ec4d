"""Spool-backed QoS 1 publishing: write to disk, publish, delete on the broker's PUBACK.

Within one agent process paho keeps every unacknowledged QoS 1 message in memory and sends it again after a
reconnect, so the spool only has to replay what a *previous* process left unacknowledged (``replay()`` at
start-up, before new events). The PUBACK arrives on paho's thread as a message id (mid); it can even arrive
before ``publish()`` has returned that mid to us, so early acknowledgements are parked for a few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from nodeagent.mqtt.spool import Pending, Spool

# How long an acknowledgement for a mid we have not bound yet is kept. paho hands out mids for QoS 0 messages
# (telemetry) too, and those are never bound; 10 s is far longer than publish() takes to return, far shorter
# than the 65535 publishes it takes for a mid to come round again.
EARLY_ACK_S = 10.0

Publish = Callable[[str, bytes], "int | None"]


class Outbox:
    """Sends spooled events through ``publish(topic, payload) -> mid`` and forgets them on ``acked(mid)``."""

    def __init__(self, spool: Spool, publish: Publish, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.spool = spool
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()  # never held while calling paho (paho calls acked() under its own lock)
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._early: dict[int, float] = {}  # mid -> when its PUBACK came

    def send(self, topic: str, kind: str, make: Callable[[int], bytes], job: str = "") -> Pending:
        """Spool the event that ``make(seq)`` builds, then publish it. Callers serialise calls (seq order). With
        ``job``, the spool also keeps it as what this node said about that job."""
        item = self.spool.append(make, topic, kind, job)
        self._send(item)
        return item

    def resend(self, job: str) -> int:
        """Publish again, unchanged (same ``seq``), what this node said about ``job``; how many events."""
        items = self.spool.job_events(job)
        for item in items:
            self._send(item)
        return len(items)

    def replay(self) -> int:
        """Publish, oldest first, every event a previous agent process left unacknowledged; how many."""
        items = self.spool.pending()
        for item in items:
            self._send(item)
        return len(items)

    def acked(self, mid: int) -> None:
        """paho's on_publish: the broker has the message with this mid (for QoS 0, it was written out)."""
        now = self._clock()
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early = {m: t for m, t in self._early.items() if now - t < EARLY_ACK_S}
                self._early[mid] = now
        if seq is not None:
            self.spool.ack(seq)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _send(self, item: Pending) -> None:
        mid = self._publish(item.topic, item.payload)
        if mid is None:
            return  # stays spooled; the next agent start sends it
        with self._lock:
            early = self._early.pop(mid, None) is not None
            if not early:
                self._inflight[mid] = item.seq
        if early:
            self.spool.ack(item.seq)
