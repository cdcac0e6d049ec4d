"""Home Assistant cannot sign. On a node that obeys only signed commands its commands come through the node's own
bridge, capped to fan and identify by the code (``Commands.local_command``): whoever can publish on the node's HA
topics can ask exactly that, and the broker's ACL lets only Home Assistant's login publish there. These are the
abuse cases: an anonymous publish on an open broker, a command smuggled onto an HA topic, the restart and reboot
buttons, and the shipped ACL keeping a node's login (and so anyone without HA's password) off the topics."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.ha.discovery import ha_command_topic
from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import Broker, Credentials
from nodeagent.protocol import Command, JobSpec, Telemetry, decode, encode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.integration.mqtt_collector import Collector
from tests.shipped_broker import shipped_broker
from tests.signing import OperatorKey

pytestmark = pytest.mark.slow

FAST = "[homeassistant]\nstate_interval_s = 1.0\nexpire_after_s = 10.0\nresend_delay_max_s = 0.5\n"


def fan_mode(w: Watcher, node: str) -> str:
    seen = [m for m in w.seen if m.topic == w.topics.telemetry(node)]
    return decode(seen[-1].payload, Telemetry).fan_mode if seen else ""


def test_on_an_open_broker_anyone_may_do_what_ha_may_and_nothing_more(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey, tmp_path: Path
) -> None:
    marker = tmp_path / "rebooted"
    buttons = f'allow_restart = true\nallow_reboot = true\nreboot_command = ["touch", "{marker}"]\n'
    agent = agents.start("n1", config=FAST + buttons + operator.config())
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic) as c, Watcher(broker.url, cluster) as w:
        doc = c.wait("discovery", lambda: c.last_json(config_topic))
        w.wait("n1 online", lambda: w.online("n1"))
        assert not any(k.endswith(("restart_agent", "reboot")) for k in doc["cmps"])  # no buttons offered
        topic = lambda command: ha_command_topic(w.topics, "n1", command)  # noqa: E731
        # What HA may do, anyone reaching an open broker may do: set the fan, blink the node.
        c.publish(topic("fan"), "75")
        w.wait("fan 75", lambda: fan_mode(w, "n1") == "75.0")
        c.publish(topic("identify"), "PRESS")
        w.wait("identify", lambda: [e for e in w.events("n1") if e.data.get("identify")])
        # A command smuggled onto an HA topic is only a fan value, and a bad one.
        job = JobSpec(id="smuggled", kind="hpl")
        c.publish(topic("fan"), encode(Command(id="smuggled", cmd="run", nodes=("n1",), job=job)))
        w.wait("refused", lambda: [e for e in w.events("n1") if e.kind == "rejected" and e.field == "value"])
        # Restart and reboot are not obeyed (not even subscribed) on a node that requires signatures.
        c.publish(topic("reboot"), "PRESS")
        c.publish(topic("restart"), "PRESS")
        w.pump(1.0)
    assert not marker.exists() and w.events("n1", "smuggled") == []
    out = agent.output()
    assert "event=ha_restart_refused" in out and "set security.require_signed = false" in out


def test_the_shipped_acl_lets_only_home_assistants_login_use_the_ha_topics(
    tmp_path: Path, cluster: str, operator: OperatorKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shipped_broker(("n1", "n2", "operator", "homeassistant")) as mosq:
        tls = mosq.tls()
        for key, value in {"PICLUSTER_MQTT_USERNAME": "operator", "PICLUSTER_MQTT_PASSWORD": "pw-operator"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PICLUSTER_MQTT_CA_FILE", mosq.ca_file)
        agents = AgentFactory(tmp_path, tls, cluster)
        clients: list[Link] = []
        try:
            agents.start("n1", config=tls.login("n1") + FAST + operator.config())
            with Watcher(tls.url, cluster) as w:
                w.wait("n1 online", lambda: w.online("n1"))
                topic = ha_command_topic(w.topics, "n1", "fan")
                for user, value in (("n2", "10"), ("operator", "20"), ("homeassistant", "30")):
                    login = Credentials(user, f"pw-{user}", mosq.ca_file)
                    link = Link(f"{user}-ha", Broker.parse(tls.url), credentials=login)
                    clients.append(link)
                    link.start()
                    assert link.wait_connected(5)
                    link.publish(topic, value, qos=1)
                w.wait("HA's value", lambda: fan_mode(w, "n1") == "30.0")
                w.pump(1.0)
            # Every fan change is a log event: only HA's arrived; the broker dropped the others' publishes.
            changes = [e.message for e in w.events("n1") if "fan mode set" in e.message]
            assert changes == ["fan mode set to 30 by homeassistant"]
        finally:
            for link in clients:
                link.stop()
            agents.stop_all()
