"""One fuzz run against a real agent process: warm up, measure, fuzz, drain, measure (tests/security/test_fuzz.py and
bench/fuzz.py). Every client it opens is closed on the way out; the caller owns the agent and the broker."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Command, Event, JobSpec, Topics, decode, encode
from tests.security.fuzz_rig import PEER_NAMES, Payloads, Watch, rss_kib

_marks = itertools.count(1)


@dataclass
class Outcome:
    """What one run saw."""

    sent: int = 0
    families: dict[str, int] = field(default_factory=dict)
    per_filter: dict[str, int] = field(default_factory=dict)  # payloads sent per subscription of the agent
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    fuzz_s: float = 0.0  # from the first payload to the agent's answer to the drain mark
    spawned: set[int] = field(default_factory=set)
    child_samples: int = 0
    telemetry_gap_s: float = 0.0  # the longest silence of the agent's telemetry while fuzzed
    telemetry_after: int = 0
    alive: bool = False

    @property
    def rss_growth_kib(self) -> int:
        return self.rss_after_kib - self.rss_before_kib

    @property
    def per_s(self) -> float:
        return self.sent / self.fuzz_s if self.fuzz_s else 0.0


class FuzzSession:
    """A publisher and a listener on ``url`` for node ``node`` of ``cluster``."""

    def __init__(self, url: str, cluster: str, node: str) -> None:
        self.topics = Topics(cluster)
        self.node = node
        self.heard: list[tuple[float, str, bytes]] = []  # (when, topic, payload) of the node's telemetry and events
        broker = Broker.parse(url)
        self.listen = Link(f"fuzz-listen-{next(_marks)}", broker, on_message=self._heard)
        self.listen.subscribe(self.topics.telemetry(node), 0)
        self.listen.subscribe(self.topics.events(node), 1)
        self.send = Link(f"fuzz-send-{next(_marks)}", broker)

    def _heard(self, topic: str, payload: bytes, retained: bool) -> None:
        self.heard.append((time.monotonic(), topic, payload))

    def __enter__(self) -> FuzzSession:
        for link in (self.listen, self.send):
            link.start()
            if not link.wait_connected(10):
                raise AssertionError(f"fuzz client could not connect: {link.refused or link.failed}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.send.stop()
        self.listen.stop()

    # --- what the node said ---------------------------------------------------------------------------------------
    def telemetry_times(self, since: float = 0.0) -> list[float]:
        tele = self.topics.telemetry(self.node)
        return [t for t, topic, _ in list(self.heard) if topic == tele and t >= since]

    def events(self, job: str) -> list[Event]:
        out = []
        for _, topic, payload in list(self.heard):
            if topic == self.topics.events(self.node):
                event = decode(payload, Event)
                if event.job == job:
                    out.append(event)
        return out

    def wait(self, what: str, cond: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.05)

    def drain(self, timeout_s: float = 120.0) -> None:
        """Until the node has handled every command sent so far: its commands are served in order, so its answer
        to this one (a job of a kind it does not allow) comes after them."""
        mark = f"drain{next(_marks)}"
        job = JobSpec(id=mark, kind="stress", params={"duration_s": 1})
        self.send.publish(self.topics.node_cmd(self.node), encode(Command(id=mark, cmd="run", job=job)), qos=1)
        self.wait(f"the answer to {mark}", lambda: any(e.kind == "rejected" for e in self.events(mark)), timeout_s)

    # --- the run ----------------------------------------------------------------------------------------------
    def publish(self, gen: Payloads, count: int, rate_per_s: float, outcome: Outcome | None = None) -> None:
        """``count`` payloads at about ``rate_per_s``."""
        start = time.monotonic()
        for i in range(count):
            p = gen.next()
            self.send.publish(p.topic, p.payload, qos=0, retain=p.retain)
            if outcome is not None:
                outcome.sent += 1
                outcome.families[p.family] = outcome.families.get(p.family, 0) + 1
                outcome.per_filter[p.filter] = outcome.per_filter.get(p.filter, 0) + 1
            ahead = start + (i + 1) / rate_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def warm_up(self, gen: Payloads, count: int, rate_per_s: float) -> None:
        """Every peer name's valid telemetry and status (the tables fill to their bounds), then ``count`` payloads
        of every family, the big ones included, so allocator and caches are at their working size."""
        for name in gen.names[:PEER_NAMES]:
            payload = gen.valid_for("telemetry")
            self.send.publish(self.topics.telemetry(name), payload, qos=0)
            self.send.publish(self.topics.status(name), b"online", qos=0)
        self.publish(gen, count, rate_per_s)
        self.drain()

    def fuzz(self, pid: int, gen: Payloads, count: int, rate_per_s: float) -> Outcome:
        outcome = Outcome()
        time.sleep(1.0)  # let the warm-up's last peer messages go through and the heap settle
        outcome.rss_before_kib = rss_kib(pid)
        watch = Watch(pid)
        began = time.monotonic()
        try:
            self.publish(gen, count, rate_per_s, outcome)
            self.drain()
            outcome.fuzz_s = time.monotonic() - began
            ended = time.monotonic()
            self.wait("telemetry after the fuzz", lambda: len(self.telemetry_times(ended)) >= 3, 30)
        finally:
            watch.stop()
        time.sleep(1.0)
        outcome.rss_after_kib = rss_kib(pid)
        outcome.spawned, outcome.child_samples = watch.spawned, watch.samples
        times = [began, *self.telemetry_times(began)]
        outcome.telemetry_gap_s = max(b - a for a, b in itertools.pairwise(times))
        outcome.telemetry_after = len(self.telemetry_times(began + outcome.fuzz_s))
        outcome.alive = Path(f"/proc/{pid}").exists()
        return outcome
