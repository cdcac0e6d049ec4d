"""The adversarial fuzz suite (issue 12): a real agent on a real Mosquitto takes 20,000 hostile payloads over every
topic it subscribes to (tests/security/fuzz_rig.py says which and what) and must stay alive, keep publishing
telemetry, grow by less than 10 MB, start no process and write no log line over 1 KB.

Two runs: behind a broker with the shipped ``message_size_limit`` (which drops the 4 MB and 300 KB payloads before
the agent), and behind one without it, so those reach the agent's own bounds, with command signing off
(``security.require_signed = false``, where this agent has it) so every payload reaches the decoders.
bench/fuzz.py runs 100,000 and records the figures in BENCHMARKS.md.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodeagent import config as agent_config
from scripts.localcluster import mosquitto_conf, wait_port
from tests.conftest import AgentFactory, Mosquitto
from tests.security.fuzz_rig import FUZZ_TOML, Payloads, long_lines, subscriptions
from tests.security.fuzz_session import FuzzSession

pytestmark = pytest.mark.slow

PAYLOADS = 20_000
WARM_UP = 3_000
RATE_PER_S = 2_500.0


@dataclass
class LimitedMosquitto(Mosquitto):
    """A private broker with the shipped config's ``message_size_limit``."""

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(self.port, self.workdir / "mosquitto.log") + "message_size_limit 262144\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Mosquitto]:
    work = tmp_path / "limited"
    work.mkdir()
    mosq = LimitedMosquitto(work)
    mosq.start()
    try:
        yield mosq
    finally:
        mosq.stop()


def unsigned() -> tuple[str, dict[str, Any]]:
    """Config that lets unsigned commands reach the decoders, where this agent knows signing at all."""
    if "security" not in agent_config._SECTIONS:  # before signed commands: every command is decoded anyway
        return "", {}
    return "[security]\nrequire_signed = false\n", {"security": {"require_signed": False}}


def run_fuzz(
    tmp_path: Path, broker: Mosquitto, cluster: str, toml: str, extra: dict[str, Any], seed: int
) -> tuple[Any, str]:
    url = broker.url
    agents = AgentFactory(tmp_path, broker, cluster)
    try:
        agent = agents.start("n1", config=FUZZ_TOML + toml)
        filters = subscriptions("n1", cluster, tmp_path / "probe", extra)
        with FuzzSession(url, cluster, "n1") as session:
            session.wait("n1's first telemetry", lambda: session.telemetry_times(), 30)
            session.warm_up(Payloads(filters, "n1", seed=seed + 1, big_every=300), WARM_UP, RATE_PER_S)
            outcome = session.fuzz(agent.proc.pid, Payloads(filters, "n1", seed=seed), PAYLOADS, RATE_PER_S)
        outcome.alive = outcome.alive and agent.proc.poll() is None
        return outcome, agent.output()
    finally:
        agents.stop_all()


def check(outcome: Any, log: str) -> None:
    assert outcome.alive, "the agent died under the fuzz"
    assert outcome.sent == PAYLOADS and set(outcome.families) >= {"random", "truncated", "wrong-type", "deep", "valid"}
    assert outcome.spawned == set(), f"the agent started processes: {sorted(outcome.spawned)}"
    assert outcome.child_samples > 100, "the child-process watch did not run"
    assert outcome.rss_growth_kib < 10 * 1024, f"the agent grew {outcome.rss_growth_kib} KiB"
    assert outcome.telemetry_gap_s < 5.0 and outcome.telemetry_after >= 3, outcome
    assert long_lines(log) == [], long_lines(log)[:3]
    assert "Traceback" not in log


def test_fuzz_behind_a_broker_with_the_shipped_size_limit(limited: Mosquitto, tmp_path: Path, cluster: str) -> None:
    outcome, log = run_fuzz(tmp_path, limited, cluster, "", {}, seed=12)
    check(outcome, log)
    # node and cluster commands, launches, four peer leaves, Home Assistant's birth and buttons: each its share
    assert len(outcome.per_filter) >= 10 and min(outcome.per_filter.values()) > PAYLOADS / len(outcome.per_filter) / 2


def test_fuzz_without_a_size_limit_and_without_signing(broker: Mosquitto, tmp_path: Path, cluster: str) -> None:
    toml, extra = unsigned()
    outcome, log = run_fuzz(tmp_path, broker, cluster, toml, extra, seed=34)
    check(outcome, log)
    assert outcome.families.get("4MB", 0) >= 10  # the agent's own bound met them
    assert "event=message_dropped reason=oversize" in log
