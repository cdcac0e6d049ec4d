"""Home Assistant's side of the broker, against real agents and a real Mosquitto (no Home Assistant here; the
real one is in tests/ha/): discovery on connect and after HA's birth, the JSON state the templates read,
availability from the will, and HA's commands reaching the agent through its own command path."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from nodeagent.ha.discovery import ha_command_topic, template_paths
from nodeagent.protocol import Telemetry, Topics, decode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher
from tests.integration.mqtt_collector import Collector
from tests.waits import wait_until

FAST = "[homeassistant]\nstate_interval_s = 1.0\nexpire_after_s = 10.0\nresend_delay_max_s = 0.5\n"
PAHO = ["1.6", "2.x"]


def _lookup(state: dict, path: tuple[str, ...]) -> object:
    value: object = state
    for key in path:
        assert isinstance(value, dict) and key in value, f"state JSON has no {'.'.join(path)}: {state}"
        value = value[key]
    return value


@pytest.mark.parametrize("paho", PAHO)
def test_discovery_on_connect_state_matches_templates_and_birth_resends(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    topics = Topics(cluster)
    agents.start("n1", paho=paho, config=FAST)
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, "homeassistant/#", topics.state("n1"), topics.status("n1")) as c:
        doc = c.wait("discovery document", lambda: c.last_json(config_topic))
        state = c.wait("JSON state", lambda: c.last_json(topics.state("n1")))
        assert doc["dev"]["ids"] and doc["dev"]["name"] == "n1" and doc["dev"]["sn"]
        assert doc["o"]["name"] == "picluster"
        assert doc["avty"][0]["topic"] == topics.status("n1")
        platforms = {c_["p"] for c_ in doc["cmps"].values()}
        assert platforms == {"sensor", "binary_sensor", "button", "select"}
        # The simulated node has one NVMe drive and PCIe devices: their entities are there.
        keys = {k.rsplit("_", 1)[-1] for k in doc["cmps"]}
        assert {"critical", "correctable", "identify", "mode"} <= keys
        assert not any("restart" in k or "reboot" in k for k in doc["cmps"])  # off unless the config allows them
        for path in template_paths(doc):
            _lookup(state, path)
        assert 20 < state["temp_c"] < 90 and state["guard"] == "normal" and state["fan_mode"] == "auto"
        before = len(c.on(config_topic))
        c.publish("homeassistant/status", "online")  # HA's birth message
        c.wait("discovery re-sent after HA's birth", lambda: len(c.on(config_topic)) > before, timeout_s=10)
    with Collector(broker.url, config_topic) as late:
        late.wait("the retained discovery document", lambda: late.last_json(config_topic) == doc)


def test_state_is_published_at_its_own_interval_not_every_tick(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    topics = Topics(cluster)
    agents.start("n1", config="[homeassistant]\nstate_interval_s = 3.0\nsignificant_temp_c = 50.0\n")
    with Collector(broker.url, topics.state("n1"), topics.telemetry("n1")) as c:
        c.wait("first state", lambda: c.on(topics.state("n1")))
        start_state, start_tel = len(c.on(topics.state("n1"))), len(c.on(topics.telemetry("n1")))
        c.wait("12 telemetry ticks (6 s)", lambda: len(c.on(topics.telemetry("n1"))) >= start_tel + 12)
        states = len(c.on(topics.state("n1"))) - start_state
        assert 1 <= states <= 3, f"{states} state messages in 6 s at state_interval_s = 3"


@pytest.mark.parametrize("paho", PAHO)
def test_availability_follows_the_agent_and_broker_restart_restores_discovery(
    agents: AgentFactory, broker: Mosquitto, cluster: str, paho: str
) -> None:
    topics = Topics(cluster)
    agent = agents.start("n1", paho=paho, config=FAST)
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic, topics.status("n1")) as c:
        c.wait("discovery", lambda: c.last_json(config_topic))
        c.wait("online", lambda: c.on(topics.status("n1"))[-1:] == [b"online"])
    broker.restart()  # no persistence: the retained discovery is gone until the agent says it again
    with Collector(broker.url, config_topic, topics.status("n1")) as c:
        c.wait("discovery again after the broker restart", lambda: c.last_json(config_topic), timeout_s=30)
        agent.stop(signal.SIGKILL)
        c.wait("offline (the will) after a kill", lambda: c.on(topics.status("n1"))[-1:] == [b"offline"])


def test_ha_commands_take_the_operator_path(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    topics = Topics(cluster)
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic) as c:
        # A retained command would replay on every reconnect: the agent must ignore it.
        c.publish(ha_command_topic(topics, "n1", "identify"), "PRESS", retain=True)
    agent = agents.start("n1", config=FAST)
    with Collector(broker.url, config_topic) as c, Watcher(broker.url, cluster) as w:
        doc = c.wait("discovery", lambda: c.last_json(config_topic))
        w.wait("n1 online", lambda: w.online("n1"))
        by_key = {k.split("_", 2)[-1]: v for k, v in doc["cmps"].items()}
        button, select = by_key["identify"], by_key["fan_mode"]
        c.publish(button["command_topic"], button["payload_press"])
        w.wait("identify alert", lambda: [e for e in w.events("n1") if e.data.get("identify")])
        c.publish(select["command_topic"], "50")
        w.wait(
            "fan mode 50 in telemetry",
            lambda: (
                decode([m for m in w.seen if m.topic == topics.telemetry("n1")][-1].payload, Telemetry).fan_mode
                == "50.0"
            ),
        )
        # Invalid input is answered like piclusterctl's: a rejected event naming the field, the agent lives on.
        c.publish(select["command_topic"], "banana")
        rejected = w.wait("rejection", lambda: [e for e in w.events("n1") if e.kind == "rejected"])
        assert rejected[0].field == "value" and "auto" in rejected[0].reason
        c.publish(select["command_topic"], "auto")
        w.wait(
            "fan back to auto",
            lambda: (
                decode([m for m in w.seen if m.topic == topics.telemetry("n1")][-1].payload, Telemetry).fan_mode
                == "auto"
            ),
        )
    assert agent.proc.poll() is None
    assert "retained_command_ignored" in agent.output() and "Traceback" not in agent.output()


def test_restart_button_only_when_allowed_and_never_during_a_job(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    config = FAST + f'allow_restart = true\nrestart_command = ["touch", "{marker}"]\n'
    agents.start("n1", config=config)
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic) as c, Watcher(broker.url, cluster) as w:
        doc = c.wait("discovery", lambda: c.last_json(config_topic))
        w.wait("n1 online", lambda: w.online("n1"))
        restart = next(v for k, v in doc["cmps"].items() if k.endswith("restart_agent"))
        assert restart["device_class"] == "restart" and not any(k.endswith("reboot") for k in doc["cmps"])
        c.publish(restart["command_topic"], "PRESS")
        c.wait("the configured restart command ran", marker.exists, timeout_s=10)
        w.wait("a log event saying so", lambda: [e for e in w.events("n1") if "restart requested" in e.message])


def test_disabled_removes_the_device(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic) as c:
        c.publish(config_topic, b'{"stale": true}', retain=True)  # left by an earlier run with HA enabled
        c.wait("the stale document", lambda: c.on(config_topic))
        agents.start("n1", config="[homeassistant]\nenabled = false\n")
        c.wait("an empty retained payload (HA removes the device)", lambda: c.on(config_topic)[-1:] == [b""])


def test_a_significant_change_is_published_before_the_interval(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    topics = Topics(cluster)
    agents.start(
        "n1", config="[homeassistant]\nstate_interval_s = 120.0\nexpire_after_s = 0.0\nsignificant_temp_c = 50.0\n"
    )
    config_topic = "homeassistant/device/n1/config"
    with Collector(broker.url, config_topic, topics.state("n1")) as c, Watcher(broker.url, cluster) as w:
        doc = c.wait("discovery", lambda: c.last_json(config_topic))
        c.wait("first state", lambda: c.last_json(topics.state("n1")))
        w.wait("n1 online", lambda: w.online("n1"))
        select = next(v for k, v in doc["cmps"].items() if k.endswith("fan_mode"))
        c.publish(select["command_topic"], "30")
        # Well before the 120 s interval: the fan mode is what an automation (and HA's select) waits for.
        c.wait("a state with fan_mode 30", lambda: c.last_json(topics.state("n1"))["fan_mode"] == "30", timeout_s=15)


@pytest.mark.slow
def test_last_hpl_gflops_comes_from_a_real_run(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    topics = Topics(cluster)
    prom = tmp_path / "n1.prom"
    agents.start("n1", config=FAST + f'[prometheus]\ntextfile = "{prom}"\ntextfile_interval_s = 1.0\n')
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
    proc = ctl(
        broker, cluster, "run", "hpl", "--nodes", "n1", "--per-node", "--json", "--param", "n=800", "--param", "nb=64"
    )
    assert proc.returncode == 0, proc.stderr
    gflops = json.loads(proc.stdout)["runs"][0]["result"]["gflops"]
    with Collector(broker.url, topics.state("n1")) as c:
        c.wait(
            "the state's last HPL result",
            lambda: (c.last_json(topics.state("n1")) or {}).get("last_hpl_gflops") == round(gflops, 2),
        )
    wait_until("the gauge", lambda: None, lambda: f"picluster_hpl_last_gflops {gflops!r}" in prom.read_text(), 20)
