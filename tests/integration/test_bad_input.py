"""Malformed input on every topic the agent subscribes to: the agent answers what it can and keeps running."""

from __future__ import annotations

import msgpack
import pytest

from nodeagent.protocol import PROTOCOL_VERSION, Command, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher


def _wire(**fields: object) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "type": "command", **fields})


GARBAGE = [
    b"",
    b"\xc1",  # never valid msgpack
    b"not msgpack at all",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"v": 99, "type": "command", "id": "x"}),
    msgpack.packb({"v": PROTOCOL_VERSION, "type": "telemetry"}),
    _wire(id="x1", cmd="explode"),
    _wire(id="../../etc", cmd="run"),
    _wire(id="x2", cmd="run", nodes="node1", job={"id": "x2", "kind": "hpl"}),
    _wire(id="x3", cmd="run", job={"id": "x3", "kind": "hpl", "timeout_s": "soon"}),
    _wire(id="x4", cmd="cancel"),
    msgpack.packb({"v": PROTOCOL_VERSION, "type": "command", "id": "x5", "cmd": "run", 1: 2}),
    b"\x92" * 100_000,  # deeply nested arrays
]

# Commands that validate but cannot run: the agent must reject each with a reason.
REJECTED = {
    "r1": JobSpec(id="r1", kind="nosuchkind"),
    "r2": JobSpec(id="r2", kind="hpl", params={"n": "big"}),
    "r3": JobSpec(id="r3", kind="hpl", params={"n": 1000, "nb": 2000, "p": 1, "q": 1}),
    "r4": JobSpec(id="r4", kind="hpl", params={"nb": 64, "p": 1, "q": 1}),
}


@pytest.mark.parametrize("paho", ["1.6", "2.x"])
def test_garbage_on_every_subscribed_topic_leaves_the_agent_answering(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    with Watcher(broker.url, cluster) as w:
        # Retained before the agent subscribes: it arrives flagged retained, and is ignored with a warning.
        w.publish(w.topics.node_cmd("node1"), encode(Command(id="stale", cmd="cancel", job_id="stale")), retain=True)
        w.publish(w.topics.node_cmd("node1"), b"ping", retain=False)  # flush: the retained one is stored
    agent = agents.start("node1", paho=paho)
    with Watcher(broker.url, cluster) as w:
        w.wait("node1 online", lambda: w.online("node1"))
        for topic in (w.topics.node_cmd("node1"), w.topics.cluster_cmd()):
            for payload in GARBAGE:
                w.publish(topic, payload)
        for job in REJECTED.values():
            w.publish(w.topics.node_cmd("node1"), encode(Command(id=job.id, cmd="run", job=job)))
        w.wait(
            "a rejection for every bad job",
            lambda: all(any(e.kind == "rejected" for e in w.events("node1", job)) for job in ("x3", *REJECTED)),
            timeout_s=10,
        )
        before = w.telemetry_count("node1")
        w.wait("telemetry still flowing", lambda: w.telemetry_count("node1") > before + 2, timeout_s=5)
        # A valid job after all that still runs to the end.
        good = JobSpec(id="ok1", kind="hpl", params={"n": 600, "nb": 64, "p": 1, "q": 1})
        w.publish(w.topics.node_cmd("node1"), encode(Command(id="ok1", cmd="run", job=good)))
        w.wait(
            "the good job to finish", lambda: any(e.kind == "finished" for e in w.events("node1", "ok1")), timeout_s=60
        )
        w.publish(w.topics.node_cmd("node1"), b"", retain=True)  # clear our retained garbage

    reasons = {job: next(e for e in w.events("node1", job) if e.kind == "rejected") for job in ("x3", *REJECTED)}
    assert reasons["x3"].field == "job.timeout_s" and "number" in reasons["x3"].reason
    assert "nosuchkind" in reasons["r1"].reason and reasons["r1"].field == "job.kind"
    assert reasons["r2"].field == "params.n"
    assert reasons["r3"].field.startswith("params.nb") or "nb" in reasons["r3"].reason
    assert reasons["r4"].field == "params.n" and "missing" in reasons["r4"].reason
    assert agent.proc.poll() is None, "the agent died"
    log = agent.output()
    assert "Traceback" not in log
    assert "event=bad_message" in log and "event=retained_command_ignored" in log
    assert not w.events("node1", "stale"), "a retained command was executed"
