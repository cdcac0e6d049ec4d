"""Issue 12, finding 8: "TLS is implemented but no test runs it; the shipped Mosquitto config has no TLS listener and
allows anonymous". Here the shipped config runs with a throwaway CA (openssl, tests/tlsca.py), and a real agent and
piclusterctl on both paho majors run a job end to end over mqtts://; a client without the CA, plain MQTT to the TLS
port and TLS to the plain port each fail at once with the reason and the fix; with the config's client-certificate
option on, an agent with a certificate from the CA gets in and a client without one does not."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, AgentFactory, paho_env
from tests.integration.helpers import Watcher
from tests.shipped_broker import ShippedBroker, shipped_broker
from tests.signing import OperatorKey
from tests.tlsca import ThrowawayCA
from tests.waits import wait_until

pytestmark = pytest.mark.slow


def piclusterctl(
    url: str, cluster: str, *args: str, paho: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """piclusterctl as a real process on the chosen paho major, with exactly the login in ``env``."""
    base = {k: v for k, v in paho_env(paho).items() if not k.startswith("PICLUSTER_MQTT_")}
    argv = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", cluster, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env={**base, **(env or {})})


def operator_login(mosq: ShippedBroker) -> dict[str, str]:
    return {
        "PICLUSTER_MQTT_USERNAME": "operator",
        "PICLUSTER_MQTT_PASSWORD": "pw-operator",
        "PICLUSTER_MQTT_CA_FILE": mosq.ca_file,
    }


@pytest.fixture
def tls_broker() -> Iterator[ShippedBroker]:
    with shipped_broker(("n1", "n2", "operator")) as mosq:
        yield mosq


@pytest.mark.parametrize("paho", ["1.6", "2.x"])
def test_a_job_runs_end_to_end_over_tls(
    tls_broker: ShippedBroker,
    tmp_path: Path,
    cluster: str,
    paho: str,
    monkeypatch: pytest.MonkeyPatch,
    operator: OperatorKey,
) -> None:
    """As a fleet set up by docs/security.md runs: TLS, logins, the ACL, and an agent that obeys only signed
    commands, which piclusterctl signs with the operator's key."""
    tls = tls_broker.tls()
    for key, value in operator_login(tls_broker).items():
        monkeypatch.setenv(key, value)  # this process's watcher
    agents = AgentFactory(tmp_path, tls, cluster)
    try:
        agent = agents.start("n1", paho=paho, config=tls.login("n1") + operator.config())
        with Watcher(tls.url, cluster) as w:
            w.wait("n1 online over TLS", lambda: w.online("n1"))
        args = ("run", "hpl", "--nodes", "n1", "--json", "--param", "n=400", "--param", "nb=40")
        run = piclusterctl(tls.url, cluster, *args, paho=paho, env=operator_login(tls_broker) | operator.env)
        assert run.returncode == 0, run.stdout + run.stderr
        out = json.loads(run.stdout)
        assert out["passed"] is True and out["runs"][0]["state"] == "finished"
        assert f"event=mqtt_connected broker={tls.url}" in agent.output()
    finally:
        agents.stop_all()


@pytest.mark.parametrize("paho", ["1.6", "2.x"])
def test_wrong_or_missing_trust_fails_at_once_with_the_reason(
    tls_broker: ShippedBroker, tmp_path: Path, cluster: str, paho: str
) -> None:
    tls = tls_broker.tls()
    no_ca = {k: v for k, v in operator_login(tls_broker).items() if k != "PICLUSTER_MQTT_CA_FILE"}
    cases = {
        "no CA": (tls.url, no_ca, ["is not trusted (self-signed certificate in certificate chain)", "--mqtt-ca-file"]),
        "plain MQTT to the TLS port": (
            f"mqtt://127.0.0.1:{tls_broker.tls_port}",
            operator_login(tls_broker),
            [f"if port {tls_broker.tls_port} is its TLS port, use mqtts://"],
        ),
        "TLS to the plain port": (
            f"mqtts://127.0.0.1:{tls_broker.port}",
            operator_login(tls_broker),
            [f"127.0.0.1:{tls_broker.port} dropped the connection during the TLS handshake: it is most likely a plain"],
        ),
    }
    for what, (url, env, words) in cases.items():
        proc = piclusterctl(url, cluster, "nodes", paho=paho, env=env)
        assert proc.returncode == 1, (what, proc.stdout, proc.stderr)
        for word in words:
            assert word in proc.stderr, (what, proc.stderr)
    # An agent without the CA says so in its log, once, and keeps trying (the operator may install the CA).
    agents = AgentFactory(tmp_path, tls, cluster)
    try:
        agent = agents.start("n1", paho=paho, config='[mqtt]\nusername = "n1"\npassword = "pw-n1"\n')
        wait_until("the agent's reason", lambda: None, lambda: "event=mqtt_connect_failed" in agent.output(), 20)
        assert "is not trusted" in agent.output() and agent.proc.poll() is None
    finally:
        agents.stop_all()


@pytest.mark.parametrize("paho", ["1.6", "2.x"])
def test_with_client_certificates_required_only_a_certificate_from_the_ca_gets_in(
    tmp_path: Path, cluster: str, paho: str
) -> None:
    with shipped_broker(("n1", "n2", "operator"), require_certificate=True) as mosq:
        assert mosq.ca is not None
        tls = mosq.tls()
        pair = mosq.ca.client("n1")
        agents = AgentFactory(tmp_path, tls, cluster)
        try:
            # Without a certificate first: refused, said once, and the agent keeps trying (paho 1.6's thread
            # would end on the TLS 1.3 alert without nodeagent/mqtt/paho16.py).
            bare_agent = agents.start("n2", paho=paho, config=tls.login("n2"))
            said = lambda: "client certificate" in bare_agent.output()  # noqa: E731
            wait_until("the agent saying why", lambda: None, said, 20)
            # Mosquitto logs each attempt's refusal whether OpenSSL fails it in the handshake or at the first read.
            log = mosq.workdir / "mosquitto.log"
            wait_until(
                "the agent without a certificate trying again",
                lambda: None,
                lambda: log.read_text(errors="replace").count("peer did not return a certificate") >= 2,
                20,
            )
            assert bare_agent.proc.poll() is None and "Traceback" not in bare_agent.output()
            config = tls.login("n1") + f'cert_file = "{pair.cert}"\nkey_file = "{pair.key}"\n'
            agent = agents.start("n1", paho=paho, config=config)
            ctl_cert = mosq.ca.client("operator")
            with_cert = {**operator_login(mosq), "PICLUSTER_MQTT_CERT_FILE": str(ctl_cert.cert)}
            with_cert["PICLUSTER_MQTT_KEY_FILE"] = str(ctl_cert.key)
            seen = wait_until(
                "n1 online",
                lambda: None,
                lambda: '"n1"' in (p := piclusterctl(tls.url, cluster, "--json", "nodes", env=with_cert)).stdout and p,
                20,
            )
            assert seen.returncode == 0 and "event=mqtt_connected" in agent.output()
            bare = piclusterctl(tls.url, cluster, "nodes", paho=paho, env=operator_login(mosq))
            assert bare.returncode == 1 and "client certificate" in bare.stderr, bare.stderr
            assert "Traceback" not in bare.stderr
            stranger = ThrowawayCA(tmp_path / "other-ca", "another CA").client("operator")
            foreign = {**operator_login(mosq), "PICLUSTER_MQTT_CERT_FILE": str(stranger.cert)}
            foreign["PICLUSTER_MQTT_KEY_FILE"] = str(stranger.key)
            other = piclusterctl(tls.url, cluster, "nodes", paho=paho, env=foreign)
            assert other.returncode == 1 and "certificate" in other.stderr and "Traceback" not in other.stderr
        finally:
            agents.stop_all()
