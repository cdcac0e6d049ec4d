"""The agent's MQTT session on a real broker, with paho 1.6 (Debian 12) and paho 2.x."""

from __future__ import annotations

import signal

import pytest

from nodeagent.protocol import OFFLINE, ONLINE, Command, NodeFacts, Telemetry, decode, encode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher

PAHO = ["1.6", "2.x"]


@pytest.mark.parametrize("paho", PAHO)
def test_announces_facts_online_and_telemetry_every_tick(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    agent = agents.start("n1", paho=paho)
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online with facts", lambda: w.online("n1"))
        start = w.telemetry_count("n1")
        w.wait("4 more telemetry ticks (tick_s 0.5)", lambda: w.telemetry_count("n1") >= start + 4, timeout_s=5)
    facts = w.fleet.nodes["n1"].facts
    assert isinstance(facts, NodeFacts)
    assert facts.sim and facts.board == "sim" and facts.cores == 4 and "hpl" in facts.capabilities
    telemetry = w.fleet.nodes["n1"].telemetry
    assert isinstance(telemetry, Telemetry) and 20 < (telemetry.temp_c or 0) < 90
    assert "Traceback" not in agent.output() and "DeprecationWarning" not in agent.output()


@pytest.mark.parametrize("paho", PAHO)
def test_clean_stop_says_offline_and_a_crash_fires_the_will(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    clean = agents.start("clean", paho=paho)
    crash = agents.start("crash", paho=paho)
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("clean", "crash"))
        assert clean.stop() == 0
        crash.stop(signal.SIGKILL)
        w.wait(
            "both offline", lambda: all(w.fleet.nodes[n].status == OFFLINE for n in ("clean", "crash")), timeout_s=10
        )
    # Retained: a viewer that arrives later sees the same.
    with Watcher(broker.url, cluster) as late:
        late.wait(
            "retained offline status",
            lambda: all(n in late.fleet.nodes and late.fleet.nodes[n].status == OFFLINE for n in ("clean", "crash")),
        )


@pytest.mark.parametrize("paho", PAHO)
def test_reconnects_and_reannounces_after_a_broker_restart(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    agents.start("n1", paho=paho)
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
    broker.restart()  # persistence is off: the new broker knows nothing, the agent must say it all again
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online again with facts", lambda: w.online("n1"), timeout_s=20)
        start = w.telemetry_count("n1")
        w.wait("telemetry resumes", lambda: w.telemetry_count("n1") > start + 1, timeout_s=5)
        # Its command subscriptions came back too: a command is answered.
        cancel = Command(id="c1", cmd="cancel", job_id="nosuchjob")
        w.publish(w.topics.node_cmd("n1"), encode(cancel))
        w.wait("an answer to the cancel", lambda: w.events("n1", "nosuchjob"), timeout_s=5)
        assert w.fleet.nodes["n1"].status == ONLINE


def test_status_payloads_are_plain_strings_for_home_assistant(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1")
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
    # A subscriber that arrives later gets the retained copies (live deliveries carry retain=0 by MQTT rules).
    with Watcher(broker.url, cluster) as w:
        w.wait(
            "retained status and telemetry",
            lambda: (
                w.fleet.nodes.get("n1")
                and w.fleet.nodes["n1"].telemetry
                and [m for m in w.seen if m.topic == w.topics.status("n1")]
            ),
        )
        status = [m for m in w.seen if m.topic == w.topics.status("n1")]
    assert status[-1].payload == b"online" and status[-1].retained
    telemetry = [m for m in w.seen if m.topic == w.topics.telemetry("n1")]
    assert decode(telemetry[-1].payload, Telemetry).node == "n1"
