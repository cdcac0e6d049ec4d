"""The fleet as retained messages show it: every node's status, facts and latest telemetry.

No node is polled: a viewer subscribes, takes the broker's retained snapshot, and is done.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from controller.select import natural_key
from controller.session import Received
from nodeagent.errors import ProtocolError
from nodeagent.protocol import OFFLINE, ONLINE, ChassisPower, NodeFacts, Telemetry, Topics, decode

log = logging.getLogger("picluster.ctl")


@dataclass(frozen=True)
class NodeView:
    """One node as last seen."""

    name: str
    status: str = "unknown"  # online | offline | unknown (no status retained)
    facts: NodeFacts | None = None
    telemetry: Telemetry | None = None

    @property
    def online(self) -> bool:
        return self.status == ONLINE

    def to_dict(self, now: float) -> dict[str, Any]:
        t, f = self.telemetry, self.facts
        return {
            "node": self.name,
            "status": self.status,
            **{k: getattr(f, k) if f else None for k in NODE_FACTS},
            **telemetry_row(t, NODE_TELEMETRY),
            "telemetry_age_s": round(now - t.t, 1) if t else None,
        }


STALE_AFTER_S = 10.0  # an online node whose telemetry is older: its agent or its link is stuck
NODE_FACTS = ("board", "model", "cores", "memory_mb", "agent_version", "sim")
NODE_TELEMETRY = ("temp_c", "freq_mhz", "throttle", "load1", "mem_avail_mb", "fan_duty_pct", "fan_rpm", "power_w")
NODE_TELEMETRY += ("nvme", "pcie", "job", "errors")
_NO_TELEMETRY = Telemetry(node="", seq=0, t=0.0)


def telemetry_row(t: Telemetry | None, keys: Iterable[str]) -> dict[str, Any]:
    """The named telemetry fields as plain values (lists, and dicts for drives and devices), for every table and
    JSON document that shows telemetry. Without telemetry: None, or an empty list for a list field."""
    if t is None:
        return {k: [] if isinstance(getattr(_NO_TELEMETRY, k), tuple) else None for k in keys}
    return {k: _plain(getattr(t, k)) for k in keys}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return value


def subscriptions(topics: Topics, *, telemetry: bool = True) -> tuple[str, ...]:
    """The fleet's retained topics; without ``telemetry`` for a command that needs only who is online, their facts
    and the power budgets (decoding every node's telemetry is most of a large fleet's snapshot)."""
    leaves = ("status", "facts", "telemetry", "power") if telemetry else ("status", "facts", "power")
    return tuple(topics.all_nodes(leaf) for leaf in leaves)


class Fleet:
    """Accumulates node views from messages; feed it a snapshot, then live messages."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.nodes: dict[str, NodeView] = {}
        self.power: dict[str, ChassisPower] = {}  # each chassis driver's latest power budget decision

    def feed(self, messages: Iterable[Received]) -> Fleet:
        for msg in messages:
            self.update(msg)
        return self

    def update(self, msg: Received) -> tuple[str, str] | None:
        """Apply one message; returns (node, leaf) when it was a fleet message."""
        parsed = self.topics.parse(msg.topic)
        if parsed is not None and parsed[1] == "power":
            self._power(parsed[0], msg.payload)
            return parsed
        if parsed is None or parsed[1] not in ("status", "facts", "telemetry"):
            return parsed
        node, leaf = parsed
        view = self.nodes.get(node, NodeView(node))
        try:
            if leaf == "status":
                text = msg.payload.decode(errors="replace")
                if not msg.payload:  # an empty retained payload clears the node (forgotten)
                    self.nodes.pop(node, None)
                    return parsed
                view = replace(view, status=text if text in (ONLINE, OFFLINE) else "unknown")
            elif leaf == "facts":
                view = replace(view, facts=decode(msg.payload, NodeFacts))
            else:
                view = replace(view, telemetry=decode(msg.payload, Telemetry))
        except ProtocolError as exc:
            log.warning("ignoring a malformed %s message from %s: %s", leaf, node, exc)
            return parsed
        self.nodes[node] = view
        return parsed

    def _power(self, node: str, payload: bytes) -> None:
        if not payload:
            self.power.pop(node, None)
            return
        try:
            self.power[node] = decode(payload, ChassisPower)
        except ProtocolError as exc:
            log.warning("ignoring a malformed power message from %s: %s", node, exc)

    def sorted(self) -> list[NodeView]:
        return [self.nodes[n] for n in sorted(self.nodes, key=natural_key)]
