"""Home Assistant MQTT discovery documents (pure): a node's facts and settings -> one device-based document.

One retained document per node at ``<prefix>/device/<node>/config`` carries the device (``dev``), the origin
(``o``), the node's will as availability, and every entity under ``cmps`` (HA's device-based discovery). No
deprecated keys: ``default_entity_id`` suggests the entity id (HA 2025.10 deprecated ``object_id``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.ha.entities import Entity, node_entities
from nodeagent.protocol import OFFLINE, ONLINE, NodeFacts, Topics
from nodeagent.protocol.topics import chassis_topic, discovery_topic
from nodeagent.protocol.version import __version__

ORIGIN = {"name": "picluster", "sw": __version__, "url": "https://github.com/picluster/picluster"}
CHASSIS_BOARDS = ("nanocluster",)  # boards whose nodes share one chassis (and its fan) by default
PRESS = "PRESS"  # HA's default button payload


@dataclass(frozen=True)
class Discovery:
    """A discovery document and where it goes (retained)."""

    topic: str
    document: dict[str, Any]

    @property
    def payload(self) -> bytes:
        return json.dumps(self.document, separators=(",", ":"), ensure_ascii=False).encode()


def ha_command_topic(topics: Topics, node: str, command: str) -> str:
    """Where HA's button or select publishes: ``picluster/v1/<cluster>/node/<node>/ha/<command>``."""
    return topics.node(node, "cmd").removesuffix("/cmd") + f"/ha/{command}"


def slug(text: str) -> str:
    """An entity-id-safe form: lower case, ``[a-z0-9_]``."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "node"


def device_key(facts: NodeFacts) -> str:
    """The stable part of the node's identifiers: its board serial (so a renamed node stays the same device)."""
    serial = re.sub(r"[^A-Za-z0-9_-]", "", facts.serial)
    return serial or facts.node


def chassis_name(cfg: HomeAssistantConfig, cluster: str, board: str) -> str | None:
    """The chassis a node sits in: ``homeassistant.chassis``, else the cluster's for a shared-chassis board."""
    if cfg.chassis:
        return cfg.chassis
    return cluster if board in CHASSIS_BOARDS else None


def chassis_id(cluster: str, chassis: str) -> str:
    return f"picluster_chassis_{cluster}_{chassis}"


def _manufacturer(facts: NodeFacts) -> str:
    if facts.sim:
        return "picluster (simulated)"
    return "Raspberry Pi Ltd" if facts.model.startswith("Raspberry Pi") else "unknown"


def component(entity: Entity, unique: str, node: str, state_topic: str, command_topic: str, expire_s: float) -> dict:
    """One entry of ``cmps``."""
    c: dict[str, Any] = {
        "p": entity.platform,
        "name": entity.name,
        "unique_id": f"{unique}_{entity.key}",
        "default_entity_id": f"{entity.platform}.{slug(node)}_{entity.key}",
    }
    if entity.path:
        c["state_topic"] = state_topic
        c["value_template"] = value_template(entity)
    if entity.attributes:
        c["json_attributes_topic"] = state_topic
        c["json_attributes_template"] = attributes_template(entity)
    if entity.command:
        c["command_topic"] = command_topic
    if entity.platform in ("sensor", "binary_sensor") and expire_s > 0:
        c["expire_after"] = int(expire_s)
    if entity.platform == "binary_sensor":
        c["payload_on"], c["payload_off"] = "True", "False"  # how Jinja prints the JSON booleans
    if entity.platform == "button":
        c["payload_press"] = PRESS
    for key, value in (
        ("device_class", entity.device_class),
        ("unit_of_measurement", entity.unit),
        ("state_class", entity.state_class),
        ("icon", entity.icon),
        ("suggested_display_precision", entity.precision),
    ):
        if value is not None:
            c[key] = value
    if entity.options:
        c["options"] = list(entity.options)
    if entity.diagnostic:
        c["entity_category"] = "diagnostic"
    elif entity.config:
        c["entity_category"] = "config"
    if not entity.enabled:
        c["enabled_by_default"] = False
    return c


def value_template(entity: Entity) -> str:
    """The Jinja template that reads ``entity.path`` from the state JSON. A select shows "None" (no option)
    when the node runs a fixed percent that is not one of the options (set from piclusterctl); every template
    shows "None" (unknown) for a payload that is not JSON."""
    ref = "value_json" + "".join(f"[{json.dumps(p)}]" for p in entity.path)
    expr = ref
    if entity.platform == "select":
        expr = f"{ref} if {ref} in {json.dumps(list(entity.options))} else 'None'"
    elif entity.key == "job":
        expr = f"{ref} or 'idle'"
    # An empty payload (the retained state cleared by ``piclusterctl forget``) is not JSON: unknown, not an error.
    return f"{{{{ ({expr}) if value_json is defined else 'None' }}}}"


def attributes_template(entity: Entity) -> str:
    """The Jinja template that gives HA the JSON object at ``entity.attributes`` in the state JSON (an empty
    object when the payload is not JSON)."""
    ref = "value_json" + "".join(f"[{json.dumps(p)}]" for p in entity.attributes)
    return f"{{{{ ({ref} if value_json is defined else {{}}) | tojson }}}}"


def node_document(
    facts: NodeFacts,
    cfg: HomeAssistantConfig,
    topics: Topics,
    *,
    drives: tuple[str, ...],
    pcie: bool,
) -> Discovery:
    """The node's device document: every entity, the node's will as availability, the chassis as via_device."""
    node = facts.node
    unique = f"picluster_{device_key(facts)}"
    device: dict[str, Any] = {
        "ids": [unique],
        "name": node,
        "mf": _manufacturer(facts),
        "mdl": facts.model or facts.board,
        "hw": f"{facts.board} slot {facts.slot}" if facts.slot else facts.board,
        "sw": f"picluster-agent {facts.agent_version}",
    }
    if facts.serial:
        device["sn"] = facts.serial
    chassis = chassis_name(cfg, topics.cluster, facts.board)
    if chassis is not None:
        device["via_device"] = chassis_id(topics.cluster, chassis)
    entities = node_entities(drives, pcie, allow_restart=cfg.allow_restart, allow_reboot=cfg.allow_reboot)
    state = topics.state(node)
    cmps = {
        f"{unique}_{e.key}": component(
            e, unique, node, state, ha_command_topic(topics, node, e.command), cfg.expire_after_s
        )
        for e in entities
    }
    document = {
        "dev": device,
        "o": ORIGIN,
        "avty": [{"topic": topics.status(node), "payload_available": ONLINE, "payload_not_available": OFFLINE}],
        "qos": 1,
        "cmps": cmps,
    }
    return Discovery(discovery_topic(cfg.prefix, node), document)


def chassis_document(facts: NodeFacts, cfg: HomeAssistantConfig, topics: Topics, chassis: str) -> Discovery:
    """The chassis device, published by the node that drives the chassis fan: its fan duty is that node's."""
    ident = chassis_id(topics.cluster, chassis)
    fan = Entity("fan_duty", "sensor", "Fan duty", ("fan_duty_pct",), None, "%", "measurement", icon="mdi:fan")
    document = {
        "dev": {
            "ids": [ident],
            "name": f"{chassis} chassis",
            "mf": "Sipeed" if facts.board == "nanocluster" else "unknown",
            "mdl": "NanoCluster" if facts.board == "nanocluster" else "chassis",
        },
        "o": ORIGIN,
        "avty": [{"topic": topics.status(facts.node), "payload_available": ONLINE, "payload_not_available": OFFLINE}],
        "qos": 1,
        "cmps": {
            f"{ident}_fan_duty": component(
                fan, ident, f"{chassis}_chassis", topics.state(facts.node), "", cfg.expire_after_s
            )
        },
    }
    # <prefix>/device/<node>/chassis/config: the node_id level keeps it under the publishing node's name, so a
    # broker ACL can allow each node its own discovery topics only (systemd/mosquitto/picluster.acl).
    return Discovery(chassis_topic(cfg.prefix, facts.node), document)


def template_paths(document: Mapping[str, Any], key: str = "value_template") -> list[tuple[str, ...]]:
    """Every state-JSON path the document's templates read (for tests and for ``piclusterctl`` checks);
    ``key="json_attributes_template"`` for the paths of the entities' attributes."""
    paths = []
    for c in document["cmps"].values():
        tpl = c.get(key, "")
        match = re.search(r"value_json((?:\[\"[^\"]*\"\])+)", tpl)
        if match:
            paths.append(tuple(json.loads(f"[{p}]")[0] for p in re.findall(r"\[(\"[^\"]*\")\]", match.group(1))))
    return paths
