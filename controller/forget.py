"""``piclusterctl forget NODE``: remove a decommissioned node from the broker and from Home Assistant.

Publishes empty retained payloads on the node's retained topics (status, facts, telemetry, state) and on its HA
discovery documents (the node's device and, if it drove one, the chassis device): HA deletes a device whose
discovery document is cleared, and ``piclusterctl nodes`` stops listing the node. An online node would publish
everything again at once, so it is refused unless ``--force``.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.fleet import Fleet
from controller.session import Session
from nodeagent.protocol import check_name
from nodeagent.protocol.topics import chassis_topic, discovery_topic

RETAINED_LEAVES = ("status", "facts", "telemetry", "state", "power")  # power: a chassis driver's last cap


class ForgetRefused(Exception):
    """The node is online: forgetting it now would not last."""


@dataclass(frozen=True)
class Forgotten:
    node: str
    topics: tuple[str, ...]
    was: str  # the node's status before: online, offline, unknown, or "absent"


def forget_topics(session: Session, node: str, ha_prefix: str) -> tuple[str, ...]:
    t = session.topics
    return (
        *(t.node(node, leaf) for leaf in RETAINED_LEAVES),
        discovery_topic(ha_prefix, node),
        chassis_topic(ha_prefix, node),
    )


def forget(session: Session, node: str, *, ha_prefix: str = "homeassistant", force: bool = False) -> Forgotten:
    """Clear ``node``'s retained topics; raise ForgetRefused (with the fix) when it is online and not ``force``."""
    check_name("node", node)
    fleet = Fleet(session.topics).feed(session.snapshot())
    view = fleet.nodes.get(node)
    was = view.status if view is not None else "absent"
    if view is not None and view.online and not force:
        raise ForgetRefused(
            f"forget: {node} is online, so its agent would publish everything again at once; stop its agent "
            f"(systemctl stop picluster-agent on {node}), or pass --force"
        )
    topics = forget_topics(session, node, ha_prefix)
    for topic in topics:
        session.link.publish(topic, b"", qos=1, retain=True)
    # Our own sync marker comes back after the broker has handled everything published before it.
    for _ in session.snapshot():
        pass
    return Forgotten(node, topics, was)
