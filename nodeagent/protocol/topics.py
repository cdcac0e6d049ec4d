"""Topic names: one builder per topic, so no module spells a topic by hand.

```
picluster/v1/<cluster>/node/<node>/status     retained "online" | "offline" (the will)
picluster/v1/<cluster>/node/<node>/facts      retained msgpack Facts
picluster/v1/<cluster>/node/<node>/telemetry  retained msgpack Telemetry, every tick
picluster/v1/<cluster>/node/<node>/events     msgpack Event, QoS 1
picluster/v1/<cluster>/node/<node>/cmd        msgpack Command, QoS 1, for one node
picluster/v1/<cluster>/node/<node>/power      retained msgpack ChassisPower, from a chassis's driver
picluster/v1/<cluster>/cmd                    msgpack Command, QoS 1, for the nodes it lists
picluster/v1/<cluster>/ctl/<client>/sync      a controller's own echo, to know a retained snapshot is complete
<prefix>/device/<node>/config                 retained Home Assistant discovery document of a node
<prefix>/device/<node>/chassis/config         retained Home Assistant discovery document of its chassis
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nodeagent.errors import ProtocolError, echo
from nodeagent.protocol.version import TOPIC_ROOT

# Names also become Home Assistant ids and MQTT topic levels, so keep them to HA's discovery alphabet.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The most nodes any table of another node's messages holds: twice the largest fleet picluster is built for (1,050).
# Names come from topics anyone reaching the broker could publish on; past this a table takes no new name.
MAX_NODES = 2048
NODE_LEAVES = ("status", "facts", "telemetry", "events", "cmd", "state", "power")

ONLINE = "online"
OFFLINE = "offline"


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid cluster or node name, else raise ProtocolError saying what is allowed."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ProtocolError(f"{kind} name {echo(name)} must be 1-64 letters, digits, '-' or '_'", kind)
    return name


def discovery_topic(prefix: str, object_id: str) -> str:
    """Where a node's Home Assistant discovery document lives (``prefix``: HA's discovery prefix)."""
    return f"{prefix}/device/{object_id}/config"


def chassis_topic(prefix: str, node: str) -> str:
    """Where the node that drives a chassis fan publishes the chassis device."""
    return f"{prefix}/device/{node}/chassis/config"


@dataclass(frozen=True)
class Topics:
    """Topic builder for one cluster."""

    cluster: str
    root: str = TOPIC_ROOT

    def __post_init__(self) -> None:
        check_name("cluster", self.cluster)

    @property
    def base(self) -> str:
        return f"{self.root}/{self.cluster}"

    def node(self, node: str, leaf: str) -> str:
        if leaf not in NODE_LEAVES:
            raise ValueError(f"unknown node topic leaf {leaf!r}")
        return f"{self.base}/node/{check_name('node', node)}/{leaf}"

    def status(self, node: str) -> str:
        return self.node(node, "status")

    def facts(self, node: str) -> str:
        return self.node(node, "facts")

    def telemetry(self, node: str) -> str:
        return self.node(node, "telemetry")

    def events(self, node: str) -> str:
        return self.node(node, "events")

    def state(self, node: str) -> str:
        return self.node(node, "state")

    def power(self, node: str) -> str:
        return self.node(node, "power")

    def node_cmd(self, node: str) -> str:
        return self.node(node, "cmd")

    def launch(self, node: str, sender: str) -> str:
        """Where ``sender`` (a cluster job's leader) asks ``node`` to start Open MPI's daemon. The sender is part
        of the topic so a broker ACL can hold each node to its own name (``pattern write …/launch/%u``)."""
        return f"{self.base}/node/{check_name('node', node)}/launch/{check_name('node', sender)}"

    def launch_inbox(self, node: str) -> str:
        return f"{self.base}/node/{check_name('node', node)}/launch/+"

    def parse_launch(self, topic: str) -> tuple[str, str] | None:
        """``(node, sender)`` for a launch topic of this cluster, else None."""
        prefix = f"{self.base}/node/"
        parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        if len(parts) != 3 or parts[1] != "launch" or not all(NAME_RE.match(p) for p in (parts[0], parts[2])):
            return None
        return parts[0], parts[2]

    def cluster_cmd(self) -> str:
        return f"{self.base}/cmd"

    def sync(self, client_id: str) -> str:
        """A client's private echo topic: a marker published here comes back after every retained message that
        the broker sent for the client's earlier subscriptions, so a viewer knows the snapshot is complete."""
        return f"{self.base}/ctl/{check_name('client', client_id)}/sync"

    def all_nodes(self, leaf: str) -> str:
        """Wildcard subscription for one leaf of every node."""
        if leaf not in NODE_LEAVES:
            raise ValueError(f"unknown node topic leaf {leaf!r}")
        return f"{self.base}/node/+/{leaf}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """``(node, leaf)`` for a node topic of this cluster, ``("", "cmd")`` for the cluster command topic."""
        if topic == self.cluster_cmd():
            return ("", "cmd")
        prefix = f"{self.base}/node/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in NODE_LEAVES or not NAME_RE.match(parts[0]):
            return None
        return parts[0], parts[1]
