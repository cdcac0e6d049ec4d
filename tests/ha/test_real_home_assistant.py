"""A real Home Assistant (2025.4, from a cached venv: scripts/ha-venv.sh) against real simulated agents and a real
Mosquitto: every entity exists with the right class, unit and value; availability follows the agent; HA's
buttons and select reach the agent; HA's birth brings back a device whose discovery the broker lost; and HA's log
has no discovery error and no deprecation warning. One HA serves the whole module (it takes ~15 s to start)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodeagent.protocol import Telemetry, Topics, decode
from scripts.localcluster import free_port
from tests.conftest import AgentFactory, AgentProc, Mosquitto, ctl
from tests.ha.hass import HomeAssistant, start_home_assistant
from tests.integration.helpers import Watcher
from tests.integration.mqtt_collector import Collector
from tests.waits import wait_until

CLUSTER = "haclu"
NODE = "n1"
CONFIG_TOPIC = f"homeassistant/device/{NODE}/config"
# Known, harmless start-up warnings of a bare HA in a venv; anything else at WARNING about MQTT fails the test.
# The last one is HA's MQTT client noticing its own shutdown when the test restarts HA.
BENIGN = (
    "Skipping pip installation of required modules",
    "zlib_ng and isal are not available",
    "Error returned from MQTT server: The connection was lost",
)


@dataclass
class Stack:
    broker: Mosquitto
    ha: HomeAssistant
    agents: AgentFactory
    work: Path
    agent: AgentProc | None = None

    def start_agent(self) -> AgentProc:
        marker = self.work / "restarted"
        config = (
            "[mqtt]\nkeepalive_s = 30\n"  # the hung-agent test below relies on no will for 45 s
            "[homeassistant]\nstate_interval_s = 2.0\nexpire_after_s = 8.0\nresend_delay_max_s = 1.0\n"
            f'chassis = "rack1"\nallow_restart = true\nrestart_command = ["touch", "{marker}"]\n'
            '[policy.chassis]\nrole = "on"\n'
        )
        self.agent = self.agents.start(NODE, config=config)
        return self.agent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("ha")
    broker = Mosquitto(work)
    broker.start()
    ha = start_home_assistant(work / "config", http_port=free_port(), broker_port=broker.port)
    agents = AgentFactory(work, broker, CLUSTER)
    stack = Stack(broker, ha, agents, work)
    try:
        ha.wait_running()
        print(f"Home Assistant running after {ha.started_s:.1f} s")
        yield stack
    finally:
        agents.stop_all()
        ha.stop()
        stack.ha.stop()  # a test may have restarted HA: stop whichever instance runs now
        broker.stop()


def by_name(states: dict[str, dict[str, Any]], friendly: str) -> dict[str, Any] | None:
    return next((s for s in states.values() if s["attributes"].get("friendly_name") == friendly), None)


def _value(state: dict[str, Any], path: list[str]) -> Any:
    for key in path:
        state = state[key]
    return state


def test_every_entity_appears_with_class_unit_and_value(stack: Stack) -> None:
    topics = Topics(CLUSTER)
    stack.start_agent()
    with Collector(stack.broker.url, CONFIG_TOPIC, topics.state(NODE)) as c:
        doc = c.wait("discovery", lambda: c.last_json(CONFIG_TOPIC))
        c.wait("state", lambda: c.last_json(topics.state(NODE)))
        components = list(doc["cmps"].values())

        def all_there() -> dict[str, dict[str, Any]] | None:
            states = stack.ha.states()
            found = [by_name(states, f"{NODE} {x['name']}") for x in components]
            return None if any(f is None or f["state"] == "unavailable" for f in found) else states

        states = wait_until("every entity in HA", c.pump, all_there, timeout_s=60)
        for comp in components:
            s = by_name(states, f"{NODE} {comp['name']}")
            assert s is not None
            attrs = s["attributes"]
            for key in ("device_class", "unit_of_measurement", "state_class"):
                assert attrs.get(key) == comp.get(key), (comp["name"], key, attrs)
            if "options" in comp:
                assert attrs["options"] == comp["options"]

        def values_match() -> bool:
            c.pump()
            state = c.last_json(topics.state(NODE))
            now = stack.ha.states()
            for comp in components:
                if "value_template" not in comp:
                    continue
                path = re.findall(r'\["([^"]+)"\]', comp["value_template"].split(" if ")[0])
                want = _value(state, path)
                got = by_name(now, f"{NODE} {comp['name']}")["state"]  # type: ignore[index]
                if comp["p"] == "binary_sensor":
                    ok = got == {True: "on", False: "off", None: "unknown"}[want]
                elif comp["name"] == "Current job":
                    ok = got == (want or "idle")
                elif want is None:
                    ok = got == "unknown"
                elif isinstance(want, (int, float)):
                    ok = float(got) == float(want)
                else:
                    ok = got == str(want)
                if not ok:
                    return False
            return True

        wait_until("HA shows the values of the last state JSON", lambda: None, values_match, timeout_s=30)
    soc = next(e for e, s in states.items() if s["attributes"].get("friendly_name") == f"{NODE} SoC temperature")
    device = stack.ha.template(f"{{{{ device_id('{soc}') }}}}")
    assert stack.ha.template(f"{{{{ device_attr('{device}', 'name') }}}}") == NODE
    assert stack.ha.template(f"{{{{ device_attr('{device}', 'sw_version') }}}}").startswith("picluster-agent ")
    assert stack.ha.template(f"{{{{ device_attr('{device}', 'serial_number') }}}}") == doc["dev"]["sn"]
    chassis = stack.ha.template(f"{{{{ device_attr('{device}', 'via_device_id') }}}}")
    chassis_fan = next(e for e, s in states.items() if s["attributes"].get("friendly_name") == "rack1 chassis Fan duty")
    assert chassis == stack.ha.template(f"{{{{ device_id('{chassis_fan}') }}}}") and chassis not in ("", "None")


def test_the_aer_entities_show_which_error_types_rose(stack: Stack) -> None:
    """A node whose drive's link keeps failing (the simulator's aer_climb): HA's AER entity carries the error
    types as attributes, summed and per device, as the node's state JSON gives them."""
    node = "n2"
    proc = stack.agents.start(node, config='[sim]\nfaults = ["aer_climb"]\n[homeassistant]\nstate_interval_s = 2.0\n')

    def attributes() -> dict[str, Any] | None:
        s = by_name(stack.ha.states(), f"{node} PCIe AER correctable errors")
        return s["attributes"] if s is not None and "BadTLP" in s["attributes"] else None

    try:
        attrs = wait_until("the AER types as the entity's attributes", lambda: None, attributes, timeout_s=60)
        assert attrs["BadTLP"] == 2 * attrs["RxErr"] > 0
        assert attrs["devices"] == {"0001:01:00.0": {"BadTLP": attrs["BadTLP"], "RxErr": attrs["RxErr"]}}
    finally:
        proc.stop()  # its entities stay in HA, unavailable


def test_buttons_and_select_reach_the_agent(stack: Stack) -> None:
    states = stack.ha.states()
    identify = by_name(states, f"{NODE} Identify")["entity_id"]  # type: ignore[index]
    fan = by_name(states, f"{NODE} Fan mode")["entity_id"]  # type: ignore[index]
    restart = by_name(states, f"{NODE} Restart agent")["entity_id"]  # type: ignore[index]
    topics = Topics(CLUSTER)
    with Watcher(stack.broker.url, CLUSTER) as w:
        w.wait("n1 online", lambda: w.online(NODE))
        stack.ha.api("POST", "services/button/press", {"entity_id": identify})
        w.wait("the agent's identify alert", lambda: [e for e in w.events(NODE) if e.data.get("identify")])
        stack.ha.api("POST", "services/select/select_option", {"entity_id": fan, "option": "75"})

        def fan_mode() -> str:
            tel = [m for m in w.seen if m.topic == topics.telemetry(NODE)]
            return decode(tel[-1].payload, Telemetry).fan_mode if tel else ""

        w.wait("the agent runs the fan at 75 %", lambda: fan_mode() == "75.0")
        wait_until("HA's select shows 75", lambda: None, lambda: stack.ha.states()[fan]["state"] == "75", 30)
        stack.ha.api("POST", "services/select/select_option", {"entity_id": fan, "option": "auto"})
        w.wait("back to auto", lambda: fan_mode() == "auto")
        stack.ha.api("POST", "services/button/press", {"entity_id": restart})
        wait_until("the restart command ran", lambda: None, (stack.work / "restarted").exists, 30)


def test_availability_follows_the_agent_and_birth_restores_discovery(stack: Stack) -> None:
    states = stack.ha.states()
    soc = by_name(states, f"{NODE} SoC temperature")["entity_id"]  # type: ignore[index]
    assert stack.agent is not None
    # A hung agent (stopped, its TCP session still open, so no will for 1.5 x keepalive = 45 s): expire_after
    # makes HA show it unavailable instead of its last numbers as current.
    topics = Topics(CLUSTER)
    with Collector(stack.broker.url, topics.status(NODE)) as c:
        c.wait("online", lambda: c.on(topics.status(NODE))[-1:] == [b"online"])
        stack.agent.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until("expired", lambda: None, lambda: stack.ha.states()[soc]["state"] == "unavailable", 30)
            c.pump()
            assert c.on(topics.status(NODE))[-1] == b"online"  # the will has not fired: expire_after did it
        finally:
            stack.agent.proc.send_signal(signal.SIGCONT)
    wait_until("back after SIGCONT", lambda: None, lambda: stack.ha.states()[soc]["state"] != "unavailable", 30)
    stack.agent.stop(signal.SIGKILL)
    wait_until("unavailable after the kill", lambda: None, lambda: stack.ha.states()[soc]["state"] == "unavailable", 60)
    stack.start_agent()
    wait_until(
        "available again", lambda: None, lambda: stack.ha.states()[soc]["state"] not in ("unavailable", "unknown"), 60
    )
    # HA restarts while the broker has lost the retained discovery document (as after a broker restart without
    # persistence): only the agent's answer to HA's birth message can bring the device back.
    stack.ha.stop()
    with Collector(stack.broker.url, CONFIG_TOPIC) as c:
        c.publish(CONFIG_TOPIC, b"", retain=True)
        c.wait("the retained document is gone", lambda: c.on(CONFIG_TOPIC)[-1:] == [b""])
    stack.ha = restarted = start_home_assistant(
        stack.ha.config_dir, http_port=stack.ha.port, broker_port=stack.broker.port, fresh=False
    )
    restarted.wait_running()
    wait_until(
        "entities back after HA's birth",
        lambda: None,
        lambda: restarted.states().get(soc, {}).get("state") not in (None, "unavailable", "unknown"),
        60,
    )


def test_forget_removes_the_device_from_home_assistant(stack: Stack) -> None:
    states = stack.ha.states()
    soc = by_name(states, f"{NODE} SoC temperature")["entity_id"]  # type: ignore[index]
    assert stack.agent is not None and stack.agent.stop() == 0  # decommissioned: its agent is stopped
    done = ctl(stack.broker, CLUSTER, "forget", NODE)
    assert done.returncode == 0, done.stderr
    wait_until("the device's entities gone from HA", lambda: None, lambda: soc not in stack.ha.states(), 60)
    device = stack.ha.template(f"{{{{ device_id('{soc}') }}}}")
    assert device in ("", "None")


def test_home_assistant_logged_no_discovery_error_or_deprecation(stack: Stack) -> None:
    log = stack.ha.log() + (stack.ha.config_dir / "stdout.log").read_text(errors="replace")
    bad = [
        line
        for line in log.splitlines()
        if (" ERROR " in line or " CRITICAL " in line or ("WARNING" in line and not any(b in line for b in BENIGN)))
        or "deprecat" in line.lower()
    ]
    assert not bad, "\n".join(bad)
    assert "homeassistant.components.mqtt" in log  # the debug log of discovery is there to be judged
