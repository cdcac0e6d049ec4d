"""``piclusterctl forget NODE``: refused while the node is online, then every retained trace and the HA device
are gone from the broker."""

from __future__ import annotations

import json

from nodeagent.protocol import Topics
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher
from tests.integration.mqtt_collector import Collector

CONFIG_TOPIC = "homeassistant/device/n1/config"


def test_forget_refuses_an_online_node_then_clears_everything(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    topics = Topics(cluster)
    agent = agents.start("n1", config='[policy.chassis]\nrole = "on"\n[homeassistant]\nchassis = "rack1"\n')
    agents.start("n2")
    with Collector(broker.url, "homeassistant/#") as c:
        c.wait(
            "n1's device and chassis documents",
            lambda: c.on(CONFIG_TOPIC) and c.on("homeassistant/device/n1/chassis/config"),
        )
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("n1", "n2"))
    refused = ctl(broker, cluster, "forget", "n1")
    assert refused.returncode == 1 and "n1 is online" in refused.stderr and "--force" in refused.stderr
    assert agent.stop() == 0
    done = ctl(broker, cluster, "forget", "n1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["was"] == "offline" and CONFIG_TOPIC in report["cleared"]
    leaves = [topics.node("n1", leaf) for leaf in ("status", "facts", "telemetry", "state")]
    with Collector(broker.url, "homeassistant/#", *leaves) as late:
        late.sync()
        kept = [t for t, p, _ in late.seen if p and not t.startswith("test/")]
        assert kept == ["homeassistant/device/n2/config"]  # n1 is gone everywhere, n2 is untouched
    nodes = json.loads(ctl(broker, cluster, "nodes", "--json").stdout)
    assert [n["node"] for n in nodes] == ["n2"]  # the other node is untouched
    assert ctl(broker, cluster, "forget", "n2").returncode == 1  # n2 still online
