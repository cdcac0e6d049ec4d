"""The agent's Prometheus outputs for real: the textfile node_exporter reads and the /metrics endpoint, both
accepted by promtool; a textfile it cannot write is a warning with the fix, not a stop."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from scripts.localcluster import free_port
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.unit.test_metrics import promtool
from tests.waits import wait_until


def test_textfile_and_metrics_endpoint_pass_promtool(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    prom = tmp_path / "textfile" / "picluster.prom"
    prom.parent.mkdir()
    port = free_port()
    agent = agents.start(
        "n1",
        config=f'[prometheus]\ntextfile = "{prom}"\ntextfile_interval_s = 1.0\nlisten = "127.0.0.1:{port}"\n',
    )
    wait_until("the textfile", lambda: None, prom.exists, timeout_s=20)
    text = prom.read_text()
    assert promtool(text).returncode == 0, promtool(text)
    assert 'picluster_node_info{node="n1",cluster="' + cluster + '",board="sim"' in text
    assert "picluster_soc_temperature_celsius " in text
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return resp.read().decode()
        except OSError:
            return ""

    body = wait_until("/metrics", lambda: None, scrape, timeout_s=20)
    result = promtool(body)
    assert result.returncode == 0 and not result.stdout, result
    assert "picluster_fan_duty_ratio " in body and "picluster_pcie_aer_errors_total{" in body
    assert agent.proc.poll() is None


def test_an_unwritable_textfile_is_a_warning(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "picluster.prom"
    agent = agents.start("n1", config=f'[prometheus]\ntextfile = "{missing}"\n')
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        start = w.telemetry_count("n1")
        w.wait("ticks go on", lambda: w.telemetry_count("n1") > start + 2)
    out = agent.output()
    assert out.count("event=textfile_write_failed") == 1 and "fix=" in out and "Traceback" not in out
