"""Issue 12, finding 1: "Whoever can publish to the broker can run code: an anonymous client submitted a member HPL job
naming a fake leader, then made the node's agent start Open MPI's daemon with that client's -mca values; the orted
check is a denylist and accepts mca_base_component_path, mca_base_param_files, orte_report_uri,
mca_base_envar_file_prefix, PRRTE's plm_ssh_agent; orte_hnp_uri is whatever the sender says."

Replayed twice: through the shipped broker config, where an anonymous client cannot even connect and a node's login
cannot submit a job; and straight to an agent on an open broker (a leaked login), where the agent itself refuses
every forged daemon line, each naming why, and no daemon starts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker, Credentials
from nodeagent.protocol import Command, JobSpec, Topics, encode
from nodeagent.security.keys import SigningKey
from nodeagent.security.seal import seal
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.mpi_recorded import member_line, value
from tests.shipped_broker import ShippedBroker, shipped_broker
from tests.signing import OperatorKey
from tests.waits import wait_until

pytestmark = pytest.mark.slow

LAUNCHER = f"{sys.executable} -m nodeagent.mpi.launcher"
CONFIG = f'[mpi]\nlaunch_agent = "{LAUNCHER}"\n'
JOBID = value(member_line(LAUNCHER), "ess_base_jobid")
HOSTILE = {
    "component_path": (("-mca", "mca_base_component_path", "/tmp/evil"), "load Open MPI components"),
    "param_files": (("-mca", "mca_base_param_files", "/tmp/evil.conf"), "read more parameters from a file"),
    "report_uri": (("-mca", "orte_report_uri", "file:/tmp/uri"), "report the daemon's contact address"),
    "envar_file": (("-mca", "mca_base_envar_file_prefix", "/tmp/x"), "read parameters from files"),
    "ssh_agent": (("--mca", "plm_ssh_agent", "/bin/sh"), "PRRTE's launcher"),
}


def _forged_job(node: str, leader: str) -> bytes:
    job = JobSpec(id="j-forged", kind="hpl", node_params={node: {"role": "member", "leader": leader}})
    return encode(Command(id="j-forged", cmd="run", job=job))


def _launch(name: str, words: tuple[str, ...], leader: str) -> bytes:
    return encode(Command(id=f"j-forged.{name}", cmd="launch", job_id="j-forged", argv=words, sender=leader))


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShippedBroker]:
    """The shipped broker; this process (the tests' watcher) logs in as the operator over TLS."""
    with shipped_broker(("n1", "n2", "operator")) as mosq:
        monkeypatch.setenv("PICLUSTER_MQTT_USERNAME", "operator")
        monkeypatch.setenv("PICLUSTER_MQTT_PASSWORD", "pw-operator")
        monkeypatch.setenv("PICLUSTER_MQTT_CA_FILE", mosq.ca_file)
        yield mosq


def test_through_the_shipped_broker_an_anonymous_client_is_refused_and_a_node_cannot_submit(
    shipped: ShippedBroker, tmp_path: Path, cluster: str
) -> None:
    tls = shipped.tls()
    agents = AgentFactory(tmp_path, tls, cluster)
    topics = Topics(cluster)
    try:
        agent = agents.start("n1", config=tls.login("n1") + CONFIG)
        wait_until("n1 connected", lambda: None, lambda: "event=mqtt_connected" in agent.output(), 20)
        for listener in (tls, shipped):
            anonymous = Link("anon", Broker.parse(listener.url), credentials=Credentials(ca_file=shipped.ca_file))
            anonymous.start()
            try:
                assert not anonymous.wait_connected(5) and anonymous.refused == "not authorised"
            finally:
                anonymous.stop()
        # n2's login (a node, not the operator) publishes the forged job: the broker drops it. Its launch, in its
        # own name, reaches n1 (the ACL lets a node launch as itself), which refuses it: it holds no job of n2's.
        n2 = Link("n2-forger", Broker.parse(tls.url), credentials=Credentials("n2", "pw-n2", shipped.ca_file))
        with Watcher(tls.url, cluster) as w:  # the operator's login
            w.wait("n1 online", lambda: w.online("n1"))
            n2.start()
            try:
                assert n2.wait_connected(5)
                n2.publish(topics.node_cmd("n1"), _forged_job("n1", "n2"), qos=1)
                n2.publish(topics.launch("n1", "n2"), _launch("x", tuple(member_line(LAUNCHER)), "n2"), qos=1)
                n2.publish(topics.node_cmd("n1"), encode(Command(id="probe", cmd="identify", nodes=("n1",))), qos=1)
                (launch,) = w.wait("the launch refused", lambda: w.events("n1", "j-forged.x"))
            finally:
                n2.stop()
            w.pump(1.0)
        assert launch.kind == "rejected" and "this node runs no job" in launch.reason
        assert w.events("n1", "j-forged") == [] and w.events("n1", "probe") == []
        assert "event=job_accepted job=j-forged" not in agent.output()
    finally:
        agents.stop_all()


def test_on_an_open_broker_the_agent_refuses_every_forged_daemon_line(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("node2", config=CONFIG)
    leader = "evil"  # the fake leader the forged job names: it can publish on its own launch topic
    forged = {name: ((*member_line(LAUNCHER), *extra), why) for name, (extra, why) in HOSTILE.items()}
    forged["hnp"] = (tuple(member_line(LAUNCHER, hnp=f"{JOBID}.0;tcp://203.0.113.9:4444")), "none of which is")
    forged["hnp6"] = (tuple(member_line(LAUNCHER, hnp=f"{JOBID}.0;tcp6://[2001:db8::9]:4444")), "none of which is")
    with Watcher(broker.url, cluster) as w:
        w.wait("node2 online", lambda: w.online("node2"))
        w.publish(w.topics.node_cmd("node2"), _forged_job("node2", leader))
        w.wait("the member holding", lambda: any(e.kind == "started" for e in w.events("node2", "j-forged")))
        for name, (words, _) in forged.items():
            w.publish(w.topics.launch("node2", leader), _launch(name, words, leader))
        w.wait("every refusal", lambda: all(w.events("node2", f"j-forged.{n}") for n in forged))
        progress = [e for e in w.events("node2", "j-forged") if e.kind == "progress"]
        w.publish(w.topics.node_cmd("node2"), encode(Command(id="j-forged.c", cmd="cancel", job_id="j-forged")))
        w.wait("released", lambda: any(e.kind == "cancelled" for e in w.events("node2", "j-forged")))
    for name, (_, why) in forged.items():
        (event,) = w.events("node2", f"j-forged.{name}")
        assert event.kind == "rejected" and event.field == "argv" and why in event.reason, (name, event.reason)
    assert not (agents.tmp_path / "node2" / "control" / "j-forged" / "launch.json").exists()  # no daemon started
    assert all(e.phase == "waiting for the leader's launch" for e in progress)


def test_with_signing_on_only_the_operators_job_and_its_leaders_launch_get_through(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey
) -> None:
    """The finding replayed against a node that requires signed commands (the shipped default), on an open broker
    where the attacker can publish anywhere: its forged member job is refused unsigned or under its own key; and
    even for a member job the operator did submit, a launch is refused unless the leader key named in that job
    signed it, for that job, on that leader's topic. No daemon line is even looked at."""
    agents.start("node2", config=CONFIG + operator.config())
    attacker, leader_key = SigningKey.generate("attacker"), SigningKey.generate("node1")
    words = tuple(member_line(LAUNCHER))
    with Watcher(broker.url, cluster) as w:
        w.wait("node2 online", lambda: w.online("node2"))
        cmd = w.topics.node_cmd("node2")
        w.publish(cmd, _forged_job("node2", "evil"))  # as in the finding: unsigned
        w.publish(cmd, seal(attacker, cmd, _forged_job("node2", "evil")))  # signed, by a key no node trusts
        w.wait("both refused", lambda: len([e for e in w.events("node2", "j-forged") if "auth" in e.data]) == 2)
        params = {"role": "member", "leader": "node1", "leader_key": leader_key.public.b64}
        job = JobSpec(id="j-real", kind="hpl", node_params={"node2": params})
        w.command(cmd, Command(id="j-real", cmd="run", job=job))  # the operator's own
        w.wait("the member holding", lambda: any(e.kind == "started" for e in w.events("node2", "j-real")))
        topic, elsewhere = w.topics.launch("node2", "node1"), w.topics.launch("node2", "evil")

        def launch(name: str, job_id: str = "j-real", sender: str = "node1") -> bytes:
            return encode(Command(id=f"j-real.{name}", cmd="launch", job_id=job_id, argv=words, sender=sender))

        attempts = {
            "unsigned": (topic, launch("unsigned")),
            "attacker": (topic, seal(attacker, topic, launch("attacker"))),
            "operator": (topic, seal(operator.key, topic, launch("operator"))),  # operators do not sign launches
            "elsewhere": (elsewhere, seal(leader_key, elsewhere, launch("elsewhere", sender="evil"))),
            "replayed-to": (topic, seal(leader_key, elsewhere, launch("replayed-to"))),
        }
        for where, payload in attempts.values():
            w.publish(where, payload)
        w.wait("every launch refused", lambda: all(w.events("node2", f"j-real.{n}") for n in attempts))
        w.command(cmd, Command(id="j-real.c", cmd="cancel", job_id="j-real"))
        w.wait("released", lambda: any(e.kind == "cancelled" for e in w.events("node2", "j-real")))
    codes = {n: w.events("node2", f"j-real.{n}")[0].data.get("auth") for n in attempts}
    assert codes == {
        "unsigned": "unsigned",
        "attacker": "unknown_key",
        "operator": "not_allowed",
        "elsewhere": "not_allowed",
        "replayed-to": "wrong_topic",
    }
    assert not (agents.tmp_path / "node2" / "control" / "j-real" / "launch.json").exists()  # no daemon
    assert "event=job_accepted job=j-forged" not in agents.started[0].output()
