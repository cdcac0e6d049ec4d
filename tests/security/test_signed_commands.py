"""Signed commands with real agents on both paho majors: a node that requires signatures obeys what an operator
key signed for its topic, now, once; and refuses everything else, each with its own reason, which comes back to
piclusterctl with the fix. Nothing a refused command asked for happens."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.protocol import Command, Event, JobSpec, encode, envelope
from nodeagent.security.keys import SigningKey
from nodeagent.security.seal import seal
from tests.conftest import REPO, AgentFactory, Mosquitto, ctl, paho_env
from tests.integration.helpers import Watcher
from tests.signing import OperatorKey

pytestmark = pytest.mark.slow

MALLORY = SigningKey.generate("mallory")


def identify(cmd_id: str, *nodes: str) -> Command:
    return Command(id=cmd_id, cmd="identify", nodes=nodes, sender="test")


def refusals(w: Watcher, node: str) -> dict[str, Event]:
    return {e.job: e for e in w.events(node) if e.kind == "rejected" and "auth" in e.data}


@pytest.mark.parametrize("paho", ["1.6", "2.x"])
def test_each_bad_command_is_refused_with_its_own_reason_and_nothing_happens(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey, paho: str
) -> None:
    signed_before_start = time.time()
    agents.start("node1", paho=paho, config=operator.config())
    agents.start("node2", paho=paho, config=operator.config())
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("node1", "node2"))
        t = w.topics
        one, two = t.node_cmd("node1"), t.node_cmd("node2")
        sent: dict[str, tuple[str, bytes]] = {}

        def send(name: str, topic: str, payload: bytes) -> None:
            sent[name] = (topic, payload)
            w.publish(topic, payload)

        good = w.command(one, identify("good", "node1"))
        send("unsigned", one, encode(identify("unsigned", "node1")))
        send("unknown_key", one, seal(MALLORY, one, encode(identify("unknown_key", "node1"))))
        env = envelope.unpack(seal(operator.key, one, encode(identify("bad_signature", "node1"))))
        other = encode(Command(id="bad_signature", cmd="fan", nodes=("node1",), value="0"))
        send("bad_signature", one, envelope.pack(dataclasses.replace(env, body=other)))  # the key's sig, another body
        send("wrong_topic", two, seal(operator.key, one, encode(identify("wrong_topic", "node1"))))  # node1's, to node2
        send("to_all", t.cluster_cmd(), seal(operator.key, one, encode(identify("to_all", "node1"))))
        send("stale", one, seal(operator.key, one, encode(identify("stale", "node1")), now=time.time() - 120))
        send("future", one, seal(operator.key, one, encode(identify("future", "node1")), now=time.time() + 120))
        send("before", one, seal(operator.key, one, encode(identify("before", "node1")), now=signed_before_start))
        w.publish(one, good)  # the good one again: a replay
        w.wait("every refusal", lambda: len(refusals(w, "node1")) >= 8 and refusals(w, "node2"), timeout_s=30)
        w.pump(1.0)
    got = refusals(w, "node1")
    expect = {
        "unsigned": ("unsigned", "piclusterctl keygen"),
        "unknown_key": ("unknown_key", f"signed by key {MALLORY.public.id}, which this node does not trust"),
        "bad_signature": ("bad_signature", "does not verify with key alice"),
        "to_all": ("wrong_topic", f"signed for topic '{one}' but received on '{t.cluster_cmd()}'"),
        "stale": ("stale", "s ago, beyond security.max_skew_s (60 s)"),
        "future": ("stale", "s in the future"),
        "before": ("stale", "before this agent started"),
        "good": ("replayed", "already obeyed this command"),
    }
    for name, (code, words) in expect.items():
        event = got.pop(name)
        assert event.data["auth"] == code and words in event.reason and event.field == "signature", (name, event)
        if name in sent:  # the refusal quotes the digest of exactly what was refused
            assert event.data["digest"] == envelope.payload_digest(*sent[name])
    assert got == {}
    (wrong,) = refusals(w, "node2").values()
    assert wrong.job == "wrong_topic" and wrong.data["auth"] == "wrong_topic"
    # Only the good command was obeyed: one identify, and the fan never moved.
    assert [e.job for e in w.events("node1") if e.data.get("identify")] == [""]
    assert [e for e in w.events("node1") if e.kind == "log" and "fan mode" in e.message] == []
    log = agents.started[0].output()
    assert log.count("event=command_refused") == 8 and "code=replayed key=alice" in log


def test_a_refusal_comes_only_from_the_nodes_a_cluster_command_names(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey
) -> None:
    for node in ("node1", "node2"):
        agents.start(node, config=operator.config())
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("node1", "node2"))
        w.publish(w.topics.cluster_cmd(), encode(identify("for-one", "node1")))
        w.command(w.topics.cluster_cmd(), identify("marker", "node2"))  # node2 answers this one after the other
        w.wait("node2's identify", lambda: any(e.data.get("identify") for e in w.events("node2")))
        w.wait("node1's refusal", lambda: refusals(w, "node1"))
    assert refusals(w, "node2") == {}


def test_refusals_are_answered_at_a_bounded_rate(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey
) -> None:
    agent = agents.start("node1", config=operator.config())
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("node1"))
        for i in range(25):
            w.publish(w.topics.node_cmd("node1"), encode(identify(f"flood-{i}", "node1")))
        w.command(w.topics.node_cmd("node1"), identify("signed", "node1"))  # still obeyed, after the flood
        w.wait("the signed one", lambda: any(e.data.get("identify") for e in w.events("node1")))
        w.pump(0.5)
    assert len(refusals(w, "node1")) == 10  # RateLog's burst; the rest are counted in the log
    assert agent.output().count("event=command_refused") == 10


def test_piclusterctl_without_a_key_prints_the_reason_and_the_fix(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents.start("node1", config=operator.config())
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("node1"))
    signed = ctl(broker, cluster, "identify", "node1")
    assert signed.returncode == 0 and "node1: identify: done" in signed.stdout, signed.stderr
    monkeypatch.delenv("PICLUSTER_KEY")
    monkeypatch.setenv("HOME", str(operator.keys_dir.parent / "home"))  # no default key either
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    unsigned = ctl(broker, cluster, "identify", "node1")
    assert unsigned.returncode == 1
    assert "node1: refused: unsigned command refused" in unsigned.stderr and "piclusterctl keygen" in unsigned.stderr
    run = ctl(broker, cluster, "run", "stress", "--nodes", "node1", "--set", "duration_s=1", "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    (node,) = json.loads(run.stdout)["runs"]
    assert node["state"] == "rejected" and "--key FILE (or PICLUSTER_KEY)" in node["reason"]
    wrong = ctl(broker, cluster, "--key", str(operator.keys_dir / "alice.pub"), "identify", "node1")
    assert wrong.returncode == 2 and "(mode 0644): chmod 600" in wrong.stderr


def test_a_job_whose_run_command_was_refused_is_not_burnt(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey
) -> None:
    """A refused copy leaves no trace in the node's seen jobs: the operator's signed command with that id runs."""
    agents.start("node1", config='kinds = ["stress"]\n' + operator.config())  # the first line is in [jobs]
    job = JobSpec(id="j-once", kind="stress", params={"duration_s": 1})
    run = Command(id="j-once", cmd="run", nodes=("node1",), job=job)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("node1"))
        w.publish(w.topics.cluster_cmd(), encode(run))  # an attacker's copy, unsigned
        w.wait("refused", lambda: refusals(w, "node1"))
        w.command(w.topics.cluster_cmd(), run)
        w.wait("accepted", lambda: any(e.kind == "accepted" for e in w.events("node1", "j-once")), timeout_s=30)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_says_where_the_public_half_goes(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "me.key"
    first = ctl_local("keygen", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and out.parent.stat().st_mode & 0o777 == 0o700
    line = first.stdout.strip()
    assert line.startswith("picluster-ed25519 ") and (tmp_path / "keys" / "me.pub").read_text().strip() == line
    assert "/etc/picluster/operators.d/" in first.stderr and "systemctl reload picluster-agent" in first.stderr
    assert SigningKey.load(out).public.line() == " ".join(line.split()[:2])
    again = ctl_local("keygen", "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr


def ctl_local(*args: str) -> subprocess.CompletedProcess[str]:
    """piclusterctl for a command that needs no broker."""
    argv = [sys.executable, "-m", "controller.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=paho_env(None), cwd=REPO, timeout=60)
