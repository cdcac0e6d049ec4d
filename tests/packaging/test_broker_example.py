"""systemd/mosquitto/: the shipped broker configuration and ACL work with the real agent and piclusterctl.

Nodes on the TLS listener (a throwaway CA); a node that logs in with its own name is seen; a node publishing under
another node's login is not; a wrong password is refused; a client without a login is refused, on either listener;
the plain listener answers on loopback only; the operator's login runs a cluster HPL whose MPI daemons the agents
launch through the broker under their own logins; a read-only login reads the fleet but cannot act.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentFactory, ctl
from tests.integration.helpers import Watcher
from tests.shipped_broker import EXAMPLE, ShippedBroker, shipped_broker
from tests.signing import OperatorKey


@pytest.fixture
def example_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShippedBroker]:
    """The shipped broker; this process (the tests' watcher, piclusterctl) logs in as the operator over TLS."""
    with shipped_broker(("n1", "n2", "operator", "viewer")) as mosq:
        monkeypatch.setenv("PICLUSTER_MQTT_USERNAME", "operator")
        monkeypatch.setenv("PICLUSTER_MQTT_PASSWORD", "pw-operator")
        monkeypatch.setenv("PICLUSTER_MQTT_CA_FILE", mosq.ca_file)
        yield mosq


def test_the_shipped_config_listens_plainly_on_loopback_only_and_lets_no_one_in_without_a_login() -> None:
    conf = (EXAMPLE / "picluster.conf").read_text()
    listeners = [line for line in conf.splitlines() if line.startswith("listener ")]
    assert listeners == ["listener 1883 127.0.0.1", "listener 8883"]
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert settings["allow_anonymous"] == "false" and settings["set_tcp_nodelay"] == "true"
    assert int(settings["message_size_limit"]) == 256 * 1024
    assert "require_certificate" not in settings  # an option (see the comment): every client would need a certificate


def test_nodes_publish_only_as_themselves(example_broker: ShippedBroker, tmp_path: Path, cluster: str) -> None:
    tls = example_broker.tls()
    agents = AgentFactory(tmp_path, tls, cluster)
    try:
        good = agents.start("n1", config=tls.login("n1"))
        agents.start("n2", config=tls.login("n1"))  # n1's login, n2's name
        wrong = agents.start("n3", config=tls.login("n2").replace("pw-n2", "not-it"))
        with Watcher(tls.url, cluster) as w:
            w.wait("n1 online with facts", lambda: w.online("n1"))
            start = w.telemetry_count("n1")
            w.wait("3 more ticks of n1", lambda: w.telemetry_count("n1") >= start + 3, timeout_s=10)
            assert set(w.fleet.nodes) == {"n1"}
        nodes = ctl(tls, cluster, "--json", "nodes")
        assert nodes.returncode == 0, nodes.stderr
        assert [(n["node"], n["status"]) for n in json.loads(nodes.stdout)] == [("n1", "online")]
        assert "event=mqtt_connected" in good.output()
        assert "event=mqtt_refused" in wrong.output()
    finally:
        agents.stop_all()


def test_only_the_operator_acts_and_cluster_jobs_launch_under_node_logins(
    example_broker: ShippedBroker, tmp_path: Path, cluster: str, monkeypatch: pytest.MonkeyPatch, operator: OperatorKey
) -> None:
    """Signed, as the shipped agent config runs: the operator's login and key act, nothing else does."""
    tls = example_broker.tls()
    agents = AgentFactory(tmp_path, tls, cluster)
    launcher = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n' + operator.config()
    secret = tmp_path / "viewer.pw"
    secret.write_text("pw-viewer\n")
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-it\n")
    try:
        agents.start("n1", config=tls.login("n1") + launcher)
        # n2 on the broker's own host: the plain listener (a later --broker wins)
        local = agents.start("n2", config=example_broker.login("n2") + launcher, extra=("--broker", example_broker.url))
        with Watcher(tls.url, cluster) as w:
            w.wait("n1 and n2 online", lambda: w.online("n1", "n2"))
        # A wrong password is refused at once, with the fix.
        bad = ctl(tls, cluster, "--mqtt-password-file", str(wrong), "nodes")
        assert bad.returncode == 1 and "refused the connection" in bad.stderr and "--mqtt-user" in bad.stderr
        # The read-only login reads the fleet, but its command is dropped by the broker: nothing confirms it.
        viewer = ("--mqtt-user", "viewer", "--mqtt-password-file", str(secret))
        nodes = ctl(tls, cluster, *viewer, "--json", "nodes")
        assert nodes.returncode == 0 and {n["node"] for n in json.loads(nodes.stdout)} == {"n1", "n2"}
        looked = ctl(tls, cluster, *viewer, "identify", "n1")
        assert looked.returncode == 1 and "n1: no confirmation" in looked.stderr, looked.stdout + looked.stderr
        with monkeypatch.context() as anonymous:  # no login at all: refused on both listeners
            for key in ("PICLUSTER_MQTT_USERNAME", "PICLUSTER_MQTT_PASSWORD"):
                anonymous.delenv(key)
            for broker in (tls, example_broker):
                anon = ctl(broker, cluster, "nodes")
                assert anon.returncode == 1 and "refused the connection: not authorised" in anon.stderr, anon.stderr
        assert ctl(tls, cluster, "identify", "n1").returncode == 0  # the operator (this process's login)
        args = ("run", "hpl", "--nodes", "n[1-2]", "--json", "--param", "n=800", "--param", "nb=64")
        run = ctl(tls, cluster, *args)
        assert run.returncode == 0, run.stdout + run.stderr
        out = json.loads(run.stdout)
        assert out["passed"] is True and out["ranks"] == 2
        launch = tmp_path / "n2" / "control" / out["job"] / "launch.json"
        assert json.loads(launch.read_text())["argv"][0] == "orted"  # n1's agent reached n2 under the ACL
        assert f"broker={example_broker.url}" in local.output()
    finally:
        agents.stop_all()


def test_the_plain_listener_is_not_on_the_network(example_broker: ShippedBroker) -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    addresses |= {a for a in _own_ipv4() if not a.startswith("127.")}
    outside = sorted(a for a in addresses if not a.startswith("127."))
    assert outside, "this machine has no address but loopback: nothing to try the plain listener from"
    for address in outside:
        with pytest.raises(OSError), socket.create_connection((address, example_broker.port), timeout=1):
            pass


def _own_ipv4() -> set[str]:
    """This machine's IPv4 addresses, from the kernel's local routing table."""
    out: set[str] = set()
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            out.add(prev.split()[-1])
    return out
