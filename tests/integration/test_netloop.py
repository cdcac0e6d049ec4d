"""One NetLoop thread driving many Links (nodeagent/mqtt/netloop.py) on a real Mosquitto: publishes from many
threads at once are all written and acknowledged, messages arrive, a stopped link leaves cleanly, and a broker
that is not there yet is retried. (sim-fleet runs it under paho 1.6 and 2.x: tests/integration/test_sim_fleet.py.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from nodeagent.mqtt.link import Link, Will
from nodeagent.mqtt.netloop import NetLoop
from nodeagent.mqtt.settings import Broker
from tests.conftest import Mosquitto

LINKS = 30
MESSAGES = 50


def wait(what: str, cond: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_many_links_on_one_thread_deliver_every_qos1_message_published_from_many_threads(
    broker: Mosquitto, cluster: str
) -> None:
    net = NetLoop("test-net")
    net.start()
    lock = threading.Lock()
    acked: Counter[int] = Counter()
    received: Counter[int] = Counter()

    def make(i: int) -> Link:
        def on_publish(mid: int) -> None:
            with lock:
                acked[i] += 1

        def on_message(topic: str, payload: bytes, retained: bool) -> None:
            with lock:
                received[i] += 1

        link = Link(
            f"{cluster}-{i}",
            Broker.parse(broker.url),
            will=Will(f"{cluster}/status/{i}", b"offline"),
            on_publish=on_publish,
            on_message=on_message,
            net=net,
        )
        link.subscribe(f"{cluster}/to/{i}", 1)
        return link

    links = [make(i) for i in range(LINKS)]
    try:
        for link in links:
            link.start()
        wait("every link connected", lambda: all(link.connected for link in links))
        assert threading.active_count() < 10  # one network thread for all of them, not one each

        def publish(i: int) -> None:
            for k in range(MESSAGES):  # each link sends to the next one: every session reads and writes
                links[i].publish(f"{cluster}/to/{(i + 1) % LINKS}", f"{i}:{k}".encode(), qos=1)

        senders = [threading.Thread(target=publish, args=(i,)) for i in range(LINKS)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        wait("every PUBACK", lambda: sum(acked.values()) >= LINKS * MESSAGES)
        wait("every message", lambda: sum(received.values()) >= LINKS * MESSAGES)
        assert acked == dict.fromkeys(range(LINKS), MESSAGES)  # type: ignore[comparison-overlap]
        assert received == dict.fromkeys(range(LINKS), MESSAGES)  # type: ignore[comparison-overlap]

        links[0].stop(goodbye=Will(f"{cluster}/status/0", b"bye"))
        assert not links[0].connected and net.sessions == LINKS - 1
    finally:
        for link in links[1:]:
            link.stop()
        net.stop()
    assert net.sessions == 0


def test_a_link_whose_broker_is_not_up_yet_connects_once_it_is(broker: Mosquitto, cluster: str) -> None:
    broker.stop()
    net = NetLoop("test-net")
    net.start()
    link = Link(f"{cluster}-late", Broker.parse(broker.url), reconnect_min_s=1, reconnect_max_s=2, net=net)
    try:
        link.start()
        time.sleep(1.5)  # at least one refused attempt
        assert not link.connected
        broker.start()
        wait("connected after the broker came up", lambda: link.connected)
    finally:
        link.stop()
        net.stop()
