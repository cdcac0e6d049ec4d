"""Issue 12, finding 6: "msgpack 1.0.3 (Debian 12) leaks ~80 bytes per nesting level on malformed input: 5,000 messages
of 1 KiB on a power topic grew the agent from 31 to 432 MB. Error reasons echo attacker values (a 250 KB payload → a
250 KB log line and a 250 KB event that the spool keeps). The shipped broker config sets no message_size_limit."

Replayed: the same 5,000 messages reach a real agent (and, in this process, the codec) without growing them; the
250 KB values come back clipped, in the event and in the log, whose bad-message lines are rate-limited; the shipped
broker drops a publish over its limit. bench/decode_leak.py measures the before and after (BENCHMARKS.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from nodeagent.errors import MAX_FIELD, MAX_REASON, ProtocolError
from nodeagent.protocol import codec
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.shipped_broker import ShippedBroker, shipped_broker
from tests.waits import wait_until

pytestmark = pytest.mark.slow

DEEP = b"\x91" * 1024  # 1 KiB nesting 1,024 levels, cut short: what leaked ~80 KB a message
BIG = 250_000


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_codec_refuses_deep_payloads_before_msgpack_and_keeps_no_memory() -> None:
    for _ in range(100):  # warm-up: the exception machinery
        with pytest.raises(ProtocolError):
            codec.unpackb(DEEP)
    before = rss_kib()
    for _ in range(5000):
        with pytest.raises(ProtocolError, match="nesting deeper than 32"):
            codec.unpackb(DEEP)
    assert rss_kib() - before < 2048  # msgpack 1.0.3 alone: ~390 MiB (bench/decode_leak.py)


def _command(**fields: object) -> bytes:
    return msgpack.packb({"v": 1, "type": "command", **fields})


def test_an_agent_survives_the_flood_and_echoes_nothing_long(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agent = agents.start("n1")
    big_values = {
        "fan": _command(id="big-fan", cmd="fan", value="9" * BIG),
        "version": msgpack.packb({"v": "v" * BIG, "type": "command", "id": "big-version", "cmd": "identify"}),
        "param": _command(
            id="big-param", cmd="run", job={"id": "big-param", "kind": "hpl", "params": {"n": "x" * BIG}}
        ),
        "key": _command(id="big-key", cmd="run", job={"id": "big-key", "kind": "hpl", "params": {"k" * BIG: 1}}),
    }
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        before = rss_kib(agent.proc.pid)
        for _ in range(5000):
            w.session.link.publish(w.topics.power("driver"), DEEP, qos=0)
        for payload in big_values.values():
            w.publish(w.topics.node_cmd("n1"), payload)
        ids = [f"big-{name}" for name in big_values]
        w.wait("every big value refused", lambda: all(w.events("n1", i) for i in ids), timeout_s=60)
        ticks = w.telemetry_count("n1")
        w.wait("n1 still publishing", lambda: w.telemetry_count("n1") >= ticks + 2)
        grown = rss_kib(agent.proc.pid) - before
    for i in ids:
        (event,) = w.events("n1", i)
        assert event.kind == "rejected", (i, event)
        assert len(event.reason) <= MAX_REASON and len(event.field) <= MAX_FIELD, (i, len(event.reason))
        assert f"({BIG} long)" in event.reason or f"({BIG + 2} long)" in event.reason or len(event.field) == MAX_FIELD
    assert grown < 10 * 1024, f"the agent grew {grown} KiB"  # before: ~400 MiB
    lines = agent.output().splitlines()
    assert lines and max(len(line) for line in lines) < 1024
    assert sum("event=bad_power" in line for line in lines) == 0  # power junk is logged at debug only
    assert agent.proc.poll() is None


def test_bad_message_log_lines_are_rate_limited(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agent = agents.start("n1")
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        for i in range(50):
            w.publish(w.topics.node_cmd("n1"), _command(id=f"bad-{i}", cmd="nonsense"))
        w.wait("all 50 answered", lambda: all(w.events("n1", f"bad-{i}") for i in range(50)), timeout_s=30)
    lines = [line for line in agent.output().splitlines() if "event=bad_message" in line]
    assert len(lines) == 10  # the burst; the other 40 are counted, and reported with the next line that passes
    assert all(e.kind == "rejected" for i in range(50) for e in w.events("n1", f"bad-{i}"))  # every sender answered


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShippedBroker]:
    with shipped_broker(("operator",)) as mosq:
        monkeypatch.setenv("PICLUSTER_MQTT_USERNAME", "operator")
        monkeypatch.setenv("PICLUSTER_MQTT_PASSWORD", "pw-operator")
        yield mosq


def test_the_shipped_broker_drops_a_publish_over_its_size_limit(shipped: ShippedBroker, cluster: str) -> None:
    with Watcher(shipped.url, cluster) as w:  # the plain loopback listener, as the operator
        topic = w.topics.sync(w.session.client_id)  # the operator's own echo topic
        w.publish(topic, b"a" * (codec.MAX_PAYLOAD_BYTES + 1))
        w.publish(topic, b"b" * codec.MAX_PAYLOAD_BYTES)
        got = wait_until("the message at the limit", w.pump, lambda: [m for m in w.seen if m.topic == topic], 10)
        time.sleep(0.5)
        w.pump()
    assert [len(m.payload) for m in w.seen if m.topic == topic] == [codec.MAX_PAYLOAD_BYTES]
    assert got[0].payload[:1] == b"b"
