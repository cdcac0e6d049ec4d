"""The pure Home Assistant pieces: the discovery document and the state JSON it reads, over any telemetry."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ConfigError
from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.ha.discovery import chassis_document, node_document, template_paths
from nodeagent.ha.entities import FAN_OPTIONS
from nodeagent.ha.state import drives, fan_mode_option, has_pcie, significant, state_document
from nodeagent.node.telemetry import telemetry_from
from nodeagent.protocol import NodeFacts, Topics
from tests.hw.trees import recorded_backend
from tests.unit.ha_strategies import facts, telemetry

COMMON = {"p", "name", "unique_id", "default_entity_id", "icon", "entity_category", "enabled_by_default"}
# The keys each MQTT platform takes (HA docs: sensor.mqtt, binary_sensor.mqtt, button.mqtt, select.mqtt).
ALLOWED = {
    "sensor": COMMON
    | {"state_topic", "value_template", "device_class", "unit_of_measurement", "state_class", "expire_after",
       "suggested_display_precision", "options", "json_attributes_topic", "json_attributes_template"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "device_class", "expire_after", "payload_on",
                               "payload_off"},
    "button": COMMON | {"command_topic", "payload_press", "device_class"},
    "select": COMMON | {"command_topic", "state_topic", "value_template", "options"},
}  # fmt: skip
UNITS = {"temperature": {"°C"}, "power": {"W"}, "frequency": {"MHz"}, "data_size": {"MiB"}}
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
flags = st.booleans()


def _lookup(state: dict, path: tuple[str, ...]) -> object:
    value: object = state
    for key in path:
        assert isinstance(value, dict) and key in value, f"the state has no {'.'.join(path)}"
        value = value[key]
    return value


@given(telemetry, facts, flags, flags)
def test_every_template_reads_a_field_the_state_has(t, f, restart, reboot) -> None:  # type: ignore[no-untyped-def]
    cfg = HomeAssistantConfig(allow_restart=restart, allow_reboot=reboot)
    state = state_document(t, 12.5)
    doc = node_document(f, cfg, Topics("c1"), drives=drives(state), pcie=has_pcie(state)).document
    json.loads(json.dumps(state, allow_nan=False))  # plain JSON, no NaN
    for path in template_paths(doc):
        value = _lookup(state, path)
        assert value is None or isinstance(value, (int, float, str, bool))
    with_template = [c for c in doc["cmps"].values() if "state_topic" in c]
    assert len(template_paths(doc)) == len(with_template)
    for path in template_paths(doc, "json_attributes_template"):  # attributes: a JSON object of names and counts
        value = _lookup(state, path)
        assert isinstance(value, dict)
        assert all(isinstance(n, int) and n > 0 for k, n in value.items() if k != "devices")
        assert all(isinstance(types, dict) for types in value.get("devices", {}).values())
    # A cleared (empty, not JSON) state must read as unknown in HA, not as a template error.
    assert all("if value_json is defined else 'None'" in c["value_template"] for c in with_template)


@given(telemetry, facts, flags, flags, st.sampled_from(["", "rack1"]))
def test_document_keys_ids_and_classes(t, f, restart, reboot, chassis) -> None:  # type: ignore[no-untyped-def]
    cfg = HomeAssistantConfig(allow_restart=restart, allow_reboot=reboot, chassis=chassis)
    state = state_document(t, None)
    d = node_document(f, cfg, Topics("c1"), drives=drives(state), pcie=has_pcie(state))
    doc = d.document
    assert d.topic == f"homeassistant/device/{f.node}/config"
    assert set(doc) == {"dev", "o", "avty", "qos", "cmps"}
    assert doc["dev"]["ids"] and doc["dev"]["name"] == f.node and doc["o"]["name"]
    assert ("via_device" in doc["dev"]) == bool(chassis or f.board == "nanocluster")
    assert "object_id" not in d.payload.decode() and "obj_id" not in d.payload.decode()
    uniques = [c["unique_id"] for c in doc["cmps"].values()]
    assert len(set(uniques)) == len(uniques) and all(ID_RE.match(u) for u in uniques)
    assert all(ID_RE.match(k) for k in doc["cmps"])
    entity_ids = [c["default_entity_id"] for c in doc["cmps"].values()]
    assert len(set(entity_ids)) == len(entity_ids)
    for c in doc["cmps"].values():
        assert set(c) <= ALLOWED[c["p"]], set(c) - ALLOWED[c["p"]]
        assert re.match(rf"^{c['p']}\.[a-z0-9_]+$", c["default_entity_id"])
        if c.get("device_class") in UNITS:
            assert c["unit_of_measurement"] in UNITS[c["device_class"]]
        if c.get("device_class") == "enum":
            assert c["options"] and "unit_of_measurement" not in c and "state_class" not in c
        if c["p"] == "binary_sensor":
            assert c["device_class"] == "problem"
        if c["p"] in ("sensor", "binary_sensor"):
            assert c["expire_after"] == cfg.expire_after_s
        if c.get("state_class") == "total_increasing":
            assert c.get("entity_category") == "diagnostic"
    commands = {c["command_topic"].rsplit("/", 1)[-1] for c in doc["cmps"].values() if "command_topic" in c}
    assert commands == {"identify", "fan", *(["restart"] if restart else []), *(["reboot"] if reboot else [])}
    assert d.payload == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@given(facts)
def test_chassis_document_is_its_own_device(f) -> None:  # type: ignore[no-untyped-def]
    doc = chassis_document(f, HomeAssistantConfig(), Topics("c1"), "c1").document
    node = node_document(f, HomeAssistantConfig(chassis="c1"), Topics("c1"), drives=(), pcie=False).document
    assert node["dev"]["via_device"] == doc["dev"]["ids"][0]
    assert set(doc["cmps"]) and all(c["unique_id"].startswith(doc["dev"]["ids"][0]) for c in doc["cmps"].values())


@given(telemetry)
def test_the_fan_select_shows_an_option_or_none(t) -> None:  # type: ignore[no-untyped-def]
    option = state_document(t, None)["fan_mode"]
    assert option == fan_mode_option(t.fan_mode)
    assert option == "auto" or float(option) == float(t.fan_mode)
    assert fan_mode_option("50.0") in FAN_OPTIONS and fan_mode_option("auto") == "auto"


@given(telemetry, st.floats(0.5, 20))
def test_significant_change(t, threshold) -> None:  # type: ignore[no-untyped-def]
    state = state_document(t, None)
    assert significant(None, state, threshold)
    assert not significant(state, state, threshold)
    hotter = {**state, "guard": "critical" if state["guard"] != "critical" else "normal"}
    assert significant(state, hotter, threshold)
    assert significant(state, {**state, "job": "other-job" if state["job"] != "other-job" else None}, threshold)
    if state["temp_c"] is not None:
        assert significant(state, {**state, "temp_c": state["temp_c"] + threshold * 1.01}, threshold)
        assert not significant(state, {**state, "temp_c": state["temp_c"] + threshold / 2}, threshold)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"homeassistant\.expire_after_s: expected 0 .* above state_interval_s"):
        HomeAssistantConfig(state_interval_s=30, expire_after_s=20)
    with pytest.raises(ConfigError, match=r"homeassistant\.prefix"):
        HomeAssistantConfig(prefix="home/#")
    assert HomeAssistantConfig().birth == "homeassistant/status"
    assert HomeAssistantConfig(prefix="ha", birth_topic="").birth == "ha/status"


def test_aer_entities_carry_the_error_types_as_attributes() -> None:
    state = state_document(telemetry_from("n1", 1, recorded_backend("cm5-aer").read(0.0), None), None)
    assert state["aer_types"]["correctable"] == {
        "RxErr": 10,
        "BadTLP": 46,
        "BadDLLP": 17,
        "Rollover": 2,
        "Timeout": 26,
        "devices": {
            "0001:00:00.0": {"RxErr": 3, "BadTLP": 41, "BadDLLP": 17, "Rollover": 2, "Timeout": 26},
            "0001:01:00.0": {"RxErr": 7, "BadTLP": 5},
        },
    }
    assert state["aer_types"]["fatal"] == {"SDES": 1, "devices": {"0001:00:00.0": {"SDES": 1}}}
    f = NodeFacts(node="n1", agent_version="0.1.0", board="generic", model="m", serial="s", cores=4, memory_mb=8)
    doc = node_document(f, HomeAssistantConfig(), Topics("c1"), drives=drives(state), pcie=has_pcie(state)).document
    comp = doc["cmps"]["picluster_s_aer_nonfatal"]
    assert comp["json_attributes_topic"] == comp["state_topic"]
    assert comp["json_attributes_template"] == (
        '{{ (value_json["aer_types"]["nonfatal"] if value_json is defined else {}) | tojson }}'
    )
