"""systemd/mosquitto/: the example broker configuration and ACL work with the real agent and piclusterctl.

A node that logs in with its own name is seen; a node publishing under another node's login is not; a wrong
password is refused; the anonymous operator reads the fleet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.localcluster import wait_port
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher
from tests.packaging.conftest import REPO

EXAMPLE = REPO / "systemd" / "mosquitto"


@pytest.fixture
def example_broker() -> Iterator[Mosquitto]:
    """Mosquitto with picluster.conf and picluster.acl as shipped: only the port, paths and log differ."""
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it (apt install mosquitto)")
    work = Path(tempfile.mkdtemp(prefix="picluster-acl-"))
    work.chmod(0o1777)  # mosquitto drops to its own user and must still read these files and write its log
    mosq = Mosquitto(work)
    conf = (EXAMPLE / "picluster.conf").read_text()
    conf = conf.replace("\nlistener 1883\n", f"\nlistener {mosq.port} 127.0.0.1\n")
    conf = conf.replace("/etc/mosquitto/picluster.passwd", str(work / "picluster.passwd"))
    conf = conf.replace("/etc/mosquitto/picluster.acl", str(EXAMPLE / "picluster.acl"))
    (work / "mosquitto.conf").write_text(conf + f"persistence false\nlog_dest file {work / 'mosquitto.log'}\n")
    for i, user in enumerate(("n1", "n2")):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(work / "picluster.passwd"), user, f"pw-{user}"], check=True
        )
    (work / "picluster.passwd").chmod(0o644)
    mosq.proc = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    try:
        wait_port(mosq.port)
        yield mosq
    finally:
        mosq.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_nodes_publish_only_as_themselves(example_broker: Mosquitto, tmp_path: Path, cluster: str) -> None:
    agents = AgentFactory(tmp_path, example_broker, cluster)
    try:
        good = agents.start("n1", config='[mqtt]\nusername = "n1"\npassword = "pw-n1"\n')
        agents.start("n2", config='[mqtt]\nusername = "n1"\npassword = "pw-n1"\n')  # n1's login, n2's name
        wrong = agents.start("n3", config='[mqtt]\nusername = "n2"\npassword = "not-it"\n')
        with Watcher(example_broker.url, cluster) as w:
            w.wait("n1 online with facts", lambda: w.online("n1"))
            start = w.telemetry_count("n1")
            w.wait("3 more ticks of n1", lambda: w.telemetry_count("n1") >= start + 3, timeout_s=10)
            assert set(w.fleet.nodes) == {"n1"}
        nodes = ctl(example_broker, cluster, "--json", "nodes")
        assert nodes.returncode == 0, nodes.stderr
        assert [(n["node"], n["status"]) for n in json.loads(nodes.stdout)] == [("n1", "online")]
        assert "event=mqtt_connected" in good.output()
        assert "event=mqtt_refused" in wrong.output()
    finally:
        agents.stop_all()
