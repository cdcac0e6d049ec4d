"""A raw MQTT subscriber for tests that look at non-picluster topics (Home Assistant's discovery and birth)."""

from __future__ import annotations

import itertools
import json
import os
import queue
import time
from typing import Any

from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker
from tests.waits import wait_until

_ids = itertools.count()


class Collector:
    """Subscribes to ``topics`` and keeps every message in arrival order as (topic, payload, retained)."""

    def __init__(self, url: str, *topics: str) -> None:
        self.inbox: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
        self.seen: list[tuple[str, bytes, bool]] = []
        self.link = Link(
            f"test-collector-{time.monotonic_ns()}-{next(_ids)}",
            Broker.parse(url),
            on_message=lambda t, p, r: self.inbox.put((t, p, r)),
        )
        self.marker_topic = f"test/collector/{self.link.client_id}"
        for topic in (*topics, self.marker_topic):
            self.link.subscribe(topic, qos=1)

    def __enter__(self) -> Collector:
        self.link.start()
        assert self.link.wait_connected(10), "the test collector could not reach the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def pump(self) -> None:
        try:
            self.seen.append(self.inbox.get(timeout=0.1))
            while True:
                self.seen.append(self.inbox.get_nowait())
        except queue.Empty:
            pass

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.seen if t == topic]

    def last_json(self, topic: str) -> Any:
        payloads = [p for p in self.on(topic) if p]
        return json.loads(payloads[-1]) if payloads else None

    def wait(self, what: str, cond: Any, timeout_s: float = 20.0) -> Any:
        return wait_until(
            what, self.pump, cond, timeout_s, detail=lambda: f"topics seen: {sorted({t for t, _, _ in self.seen})}"
        )

    def sync(self) -> None:
        """Return once the broker has delivered everything before now (retained copies included): a marker
        published after subscribing comes back after them."""
        marker = os.urandom(8)
        self.link.publish(self.marker_topic, marker, qos=1)
        self.wait("the sync marker", lambda: marker in self.on(self.marker_topic))

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        self.link.publish(topic, payload, qos=1, retain=retain)
