"""systemd/mosquitto/: the example broker configuration and ACL work with the real agent and piclusterctl.

A node that logs in with its own name is seen; a node publishing under another node's login is not; a wrong
password is refused; an anonymous piclusterctl reads the fleet but cannot act; the operator's login runs a
cluster HPL whose MPI daemons the agents launch through the broker under their own logins.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
    for i, user in enumerate(("n1", "n2", "operator")):
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


def test_only_the_operator_acts_and_cluster_jobs_launch_under_node_logins(
    example_broker: Mosquitto, tmp_path: Path, cluster: str
) -> None:
    agents = AgentFactory(tmp_path, example_broker, cluster)
    launcher = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n'
    secret = tmp_path / "operator.pw"
    secret.write_text("pw-operator\n")
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-it\n")
    try:
        for node in ("n1", "n2"):
            agents.start(node, config=f'[mqtt]\nusername = "{node}"\npassword = "pw-{node}"\n{launcher}')
        with Watcher(example_broker.url, cluster) as w:
            w.wait("n1 and n2 online", lambda: w.online("n1", "n2"))
        # Anonymous: reads the fleet, but its command is dropped by the broker, so nothing confirms it.
        anon = ctl(example_broker, cluster, "identify", "n1")
        assert anon.returncode == 1 and "n1: no confirmation" in anon.stderr, anon.stdout + anon.stderr
        # A wrong password is refused at once, with the fix.
        bad = ctl(example_broker, cluster, "--mqtt-user", "operator", "--mqtt-password-file", str(wrong), "nodes")
        assert bad.returncode == 1 and "refused the connection" in bad.stderr and "--mqtt-user" in bad.stderr
        login = ("--mqtt-user", "operator", "--mqtt-password-file", str(secret))
        assert ctl(example_broker, cluster, *login, "identify", "n1").returncode == 0
        args = ("run", "hpl", "--nodes", "n[1-2]", "--json", "--param", "n=800", "--param", "nb=64")
        run = ctl(example_broker, cluster, *login, *args)
        assert run.returncode == 0, run.stdout + run.stderr
        out = json.loads(run.stdout)
        assert out["passed"] is True and out["ranks"] == 2
        launch = tmp_path / "n2" / "jobs" / out["job"] / "launch.json"
        assert json.loads(launch.read_text())["argv"][0] == "orted"  # n1's launcher reached n2 under the ACL
    finally:
        agents.stop_all()
