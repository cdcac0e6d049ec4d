"""Issue 12, finding 3: "The node's MQTT password is in every job's environment; a template that prints its
environment published it in its finished event, which anonymous readers may read under the shipped ACL."

Replayed through the shipped broker (TLS, logins, ACL), signed as a real fleet runs: a template that prints its
environment and /proc/self/environ finds no broker login, no key and nothing a leaked environment of the agent
carried; a cluster HPL's leader, whose launcher reached the broker as the node before, now holds only a token for
its agent's socket, and the token is worth nothing once the job has ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.localcluster import SIM_JOBS_USER
from tests.conftest import REPO, AgentFactory, paho_env
from tests.integration.helpers import Watcher
from tests.shipped_broker import ShippedBroker, shipped_broker
from tests.signing import OperatorKey
from tests.waits import wait_until

pytestmark = pytest.mark.slow

DUMP = """
[[jobs.template]]
name = "dump-env"
argv = ["sh", "-c", "env; echo ---; tr '\\\\000' '\\\\n' < /proc/self/environ"]
heavy = false
"""
LAUNCHER = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n'
SECRETS = ("pw-n1", "pw-n2", "pw-operator", "pw-leaked", "PICLUSTER_MQTT_", "PICLUSTER_KEY", "PRIVATE KEY")


def operator_env(mosq: ShippedBroker, key: OperatorKey) -> dict[str, str]:
    login = {"PICLUSTER_MQTT_USERNAME": "operator", "PICLUSTER_MQTT_PASSWORD": "pw-operator"}
    return login | {"PICLUSTER_MQTT_CA_FILE": mosq.ca_file} | key.env


def piclusterctl(url: str, cluster: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in paho_env(None).items() if not k.startswith(("PICLUSTER_MQTT_", "PICLUSTER_KEY"))}
    argv = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", cluster, *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=base | env)


@pytest.fixture
def shipped() -> ShippedBroker:
    with shipped_broker(("n1", "n2", "operator")) as mosq:
        yield mosq  # type: ignore[misc]


def test_a_job_that_prints_its_environment_finds_no_credential(
    shipped: ShippedBroker, tmp_path: Path, cluster: str, operator: OperatorKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = shipped.tls()
    for key, value in operator_env(shipped, operator).items():
        monkeypatch.setenv(key, value)
    agents = AgentFactory(tmp_path, tls, cluster)
    # As if the unit or a shell had left a login and a key in the agent's own environment.
    leaked = {"PICLUSTER_MQTT_PASSWORD": "pw-leaked", "PICLUSTER_KEY": str(operator.key_file)}
    try:
        agents.start("n1", config="kinds = []\n" + tls.login("n1") + operator.config() + DUMP, env=leaked)
        with Watcher(tls.url, cluster) as w:
            w.wait("n1 online", lambda: w.online("n1"))
            ctl = piclusterctl(
                tls.url, cluster, operator_env(shipped, operator), "run", "dump-env", "--nodes", "n1", "--json"
            )
            out, err = ctl.communicate(timeout=120)
            assert ctl.returncode == 0, out + err
            job = json.loads(out)["job"]
            w.wait("the job's events", lambda: any(e.kind == "finished" for e in w.events("n1", job)))
            w.pump(0.5)
        dump = (tmp_path / "n1" / "jobs" / job / "output.log").read_text()
        assert "TMPDIR=" in dump and "\n---\n" in dump  # it did print both
        published = out + "".join(e.message + json.dumps(e.result) for e in w.events("n1"))
        for secret in SECRETS:
            assert secret not in dump and secret not in published, secret
    finally:
        agents.stop_all()


ASK = """
import json, socket, sys
from nodeagent.mpi.unix_path import unix_address
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    with unix_address(sys.argv[1]) as address:
        s.connect(address)
    s.sendall(sys.stdin.buffer.read())
    sys.stdout.buffer.write(s.makefile("rb").readline())
"""


def ask_as_jobs_user(path: str, request: dict[str, object]) -> dict[str, object]:
    """One request on the launch socket from the user jobs run as: the socket answers no one else about tokens."""
    user = SIM_JOBS_USER if os.geteuid() == 0 else None
    done = subprocess.run(
        [sys.executable, "-c", ASK, path],
        input=json.dumps(request).encode() + b"\n",
        capture_output=True,
        cwd=REPO,
        user=user,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)


def _token_holder(job_prefix: str) -> dict[str, str] | None:
    """The environment of a process that holds a launch token (the leader's mpirun), if one runs now."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        if b"PICLUSTER_LAUNCH_TOKEN=" in raw and f"PICLUSTER_JOB={job_prefix}".encode() in raw:
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
    return None


def test_a_leaders_launch_token_is_its_only_credential_and_dies_with_the_job(
    shipped: ShippedBroker, tmp_path: Path, cluster: str, operator: OperatorKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = shipped.tls()
    env = operator_env(shipped, operator)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    agents = AgentFactory(tmp_path, tls, cluster)
    try:
        for node in ("n1", "n2"):
            agents.start(node, config=tls.login(node) + LAUNCHER + operator.config())
        with Watcher(tls.url, cluster) as w:
            w.wait("both online", lambda: w.online("n1", "n2"))
        args = ("run", "hpl", "--nodes", "n[1-2]", "--json", "--param", "n=1200", "--param", "nb=96", "--force")
        ctl = piclusterctl(tls.url, cluster, env, *args)
        holder = wait_until("the leader's mpirun", lambda: time.sleep(0.02), lambda: _token_holder("hpl-"), 90)
        out, err = ctl.communicate(timeout=300)
        assert ctl.returncode == 0, out + err
        assert json.loads(out)["passed"] is True
        text = "\n".join(f"{k}={v}" for k, v in holder.items())
        for secret in SECRETS:
            assert secret not in text, secret
        assert holder["PICLUSTER_LAUNCH_SOCKET"].endswith("/launch.sock")
        # The job has ended: its token opens nothing any more.
        request = {"job": holder["PICLUSTER_JOB"], "token": holder["PICLUSTER_LAUNCH_TOKEN"], "node": "n2", "argv": []}
        answer = ask_as_jobs_user(holder["PICLUSTER_LAUNCH_SOCKET"], request)
        assert answer["event"] == "refused" and "with that token" in answer["reason"], answer
    finally:
        agents.stop_all()
