#!/usr/bin/env python3
"""What the agent's event spool costs: QoS 1 events per second through a real Mosquitto, acknowledged, with the
spool (write to SQLite, publish, delete on PUBACK) and without it (publish only).

    python3 bench/spool_cost.py [--events 2000] [--rounds 5] [--json FILE]

Each round publishes ``--events`` encoded job events (the size of a progress event) and waits until the broker
has acknowledged every one. The two ways alternate round by round so machine load falls on both alike. Prints
the machine, the date, the median events/s of each way, the median microseconds per event and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.mqtt.link import Link
from nodeagent.mqtt.outbox import Outbox
from nodeagent.mqtt.settings import Broker
from nodeagent.mqtt.spool import Spool
from nodeagent.protocol import Event, encode
from scripts.localcluster import free_port, start_mosquitto, stop

TOPIC = "picluster/v1/bench/node/n1/events"


def _event(seq: int) -> bytes:
    return encode(Event(node="n1", seq=seq, t=time.time(), kind="progress", job="hpl-bench", progress=0.5, phase="HPL"))


class Acks:
    """Counts PUBACKs (and QoS 0 writes, of which there are none here) and wakes the waiter at a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.forward = None

    def __call__(self, mid: int) -> None:
        if self.forward is not None:
            self.forward(mid)
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def expect(self, n: int) -> None:
        self.count, self.target = 0, n
        self.done.clear()


def one_round(link: Link, acks: Acks, outbox: Outbox | None, events: int) -> float:
    """Seconds to publish ``events`` and have all acknowledged."""
    payloads = [_event(i) for i in range(events)]
    acks.expect(events)
    start = time.perf_counter()
    if outbox is None:
        for payload in payloads:
            link.publish(TOPIC, payload, qos=1)
    else:
        for i in range(events):
            outbox.send(TOPIC, "progress", lambda seq, i=i: payloads[i])
    if not acks.done.wait(120):
        raise RuntimeError("the broker did not acknowledge every event within 120 s")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        broker = start_mosquitto(Path(tmp), port)
        acks = Acks()
        link = Link("bench-spool", Broker("127.0.0.1", port), on_publish=acks)
        spool = Spool(Path(tmp) / "state", max_events=args.events * 2)
        outbox = Outbox(spool, lambda topic, payload: link.publish(topic, payload, qos=1))
        try:
            link.start()
            if not link.wait_connected(10):
                raise RuntimeError("cannot connect to the private mosquitto")
            one_round(link, acks, None, 200)  # warm-up
            times: dict[str, list[float]] = {"without spool": [], "with spool": []}
            for _ in range(args.rounds):
                times["without spool"].append(one_round(link, acks, None, args.events))
                acks.forward = outbox.acked
                times["with spool"].append(one_round(link, acks, outbox, args.events))
                acks.forward = None
            left = len(spool)
        finally:
            link.stop()
            spool.close()
            stop(broker)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.events / v for k, v in med.items()}
    us = {k: v / args.events * 1e6 for k, v in med.items()}
    print(f"machine: {platform.node()} {platform.machine()} cores={os.cpu_count()} python={platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"events per round: {args.events}, rounds: {args.rounds}, spool rows left unacknowledged: {left}")
    for k in times:
        print(f"{k:>14}: {rate[k]:9.0f} events/s (median), {us[k]:7.1f} us/event")
    print(f"ratio with/without, time per event: {us['with spool'] / us['without spool']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"events": args.events, "times_s": times, "median_s": med}, indent=2))
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
