"""Test-side view of the broker: a controller Session plus waits that poll real messages, never sleep blindly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.fleet import Fleet, subscriptions
from controller.session import Received, Session
from nodeagent.errors import ProtocolError
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Command, Event, Topics, decode
from tests.waits import wait_until


class Watcher:
    """Subscribes to everything of one cluster and keeps what it saw."""

    def __init__(self, url: str, cluster: str) -> None:
        self.topics = Topics(cluster)
        subs = (*subscriptions(self.topics), self.topics.all_nodes("events"))
        self.session = Session(Broker.parse(url), cluster, subscriptions=subs)
        self.fleet = Fleet(self.topics)
        self.seen: list[Received] = []

    def __enter__(self) -> Watcher:
        self.session.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.__exit__(*exc)

    def pump(self, timeout_s: float = 0.1) -> None:
        msg = self.session.get(timeout_s)
        while msg is not None:
            self.seen.append(msg)
            self.fleet.update(msg)
            msg = self.session.get(0)

    def wait(self, what: str, cond: Callable[[], Any], timeout_s: float = 20.0) -> Any:
        return wait_until(what, self.pump, cond, timeout_s)

    def events(self, node: str | None = None, job: str | None = None) -> list[Event]:
        out = []
        for msg in self.seen:
            parsed = self.topics.parse(msg.topic)
            if parsed is None or parsed[1] != "events" or (node and parsed[0] != node):
                continue
            try:
                event = decode(msg.payload, Event)
            except ProtocolError:
                continue
            if job is None or event.job == job:
                out.append(event)
        return out

    def telemetry_count(self, node: str) -> int:
        return sum(1 for m in self.seen if m.topic == self.topics.telemetry(node))

    def online(self, *nodes: str) -> bool:
        return all(n in self.fleet.nodes and self.fleet.nodes[n].online and self.fleet.nodes[n].facts for n in nodes)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.session.link.publish(topic, payload, qos=1, retain=retain)

    def command(self, topic: str, cmd: Command) -> bytes:
        """``cmd`` as piclusterctl sends it: signed when PICLUSTER_KEY names a key (tests/signing.py)."""
        return self.session.command(topic, cmd)
