"""``picluster-agent sim-fleet``: many simulated nodes in one process, each the real agent with its own MQTT
session and state directory, on a real Mosquitto, with paho 1.6 (Debian 12) and paho 2.x.

Twenty nodes: more than Mosquitto's QoS 1 window (20 in flight), which once cut ``piclusterctl nodes`` short.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.protocol import OFFLINE, ONLINE
from tests.conftest import REPO, Mosquitto, ctl, paho_env, reap_leftovers
from tests.integration.helpers import Watcher

PAHO = ["1.6", "2.x"]
COUNT = 20


class FleetProc:
    """One sim-fleet process; stopped by PID when the test ends."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, cluster: str) -> None:
        self.tmp_path, self.broker, self.cluster = tmp_path, broker, cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "fleet.log"
        self.state = tmp_path / "state"

    def start(self, count: int = COUNT, *, paho: str | None = None, extra: tuple[str, ...] = ()) -> None:
        argv = [sys.executable, "-m", "nodeagent", "sim-fleet", "--count", str(count), "--broker", self.broker.url]
        argv += ["--cluster", self.cluster, "--state-dir", str(self.state), "--tick-s", "0.5", *extra]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=paho_env(paho), cwd=REPO)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def fleet(tmp_path: Path, broker: Mosquitto, cluster: str) -> Iterator[FleetProc]:
    proc = FleetProc(tmp_path, broker, cluster)
    try:
        yield proc
    finally:
        proc.stop(signal.SIGKILL)
        for node_dir in (proc.state / "sim").glob("*"):
            reap_leftovers(node_dir)


def names(count: int = COUNT, prefix: str = "sim") -> list[str]:
    return [f"{prefix}{i}" for i in range(1, count + 1)]


def wait_ready(broker: Mosquitto, cluster: str, nodes: list[str], timeout_s: float = 30.0) -> None:
    """Every node online, with facts and a first tick (so its health gate has a sample to judge)."""
    with Watcher(broker.url, cluster) as w:
        w.wait(
            f"{len(nodes)} nodes online with telemetry",
            lambda: (
                all(n in w.fleet.nodes and w.fleet.nodes[n].telemetry is not None for n in nodes) and w.online(*nodes)
            ),
            timeout_s=timeout_s,
        )


@pytest.mark.parametrize("paho", PAHO)
def test_a_fleet_is_nodes_that_really_run_jobs_and_its_death_fires_every_will(
    fleet: FleetProc, broker: Mosquitto, cluster: str, paho: str
) -> None:
    fleet.start(paho=paho)
    wait_ready(broker, cluster, names())

    # piclusterctl nodes sees every node with its facts: 40 retained QoS 1 messages, over the broker's window.
    listed = json.loads(ctl(broker, cluster, "nodes", "--json").stdout)
    assert [n["node"] for n in listed] == names()
    assert all(n["status"] == ONLINE and n["board"] == "sim" and n["temp_c"] is not None for n in listed)

    # The light template runs as a real process on every node; each node reports its own exit status.
    proc = ctl(broker, cluster, "run", "noop", "--nodes", "all", "--json", timeout_s=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and sorted(r["node"] for r in out["runs"]) == sorted(names())
    assert all(r["state"] == "finished" and r["result"]["returncode"] == 0 for r in out["runs"])
    job = out["job"]
    for node in names():  # its own state directory: its spool and its job directory
        assert (fleet.state / "sim" / node / "spool.sqlite3").is_file()
        assert (fleet.state / "sim" / node / "jobs" / job).is_dir()

    # A real HPL on three of them, one per node, planned from each node's own facts.
    proc = ctl(broker, cluster, "run", "hpl", "--per-node", "--nodes", "sim[1-3]", "--json", "--param", "n=400",
               "--param", "nb=64", timeout_s=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hpl = json.loads(proc.stdout)
    assert hpl["passed"] is True and sorted(r["node"] for r in hpl["runs"]) == ["sim1", "sim2", "sim3"]
    assert all(r["result"]["gflops"] > 0 and r["result"]["n"] == 400 for r in hpl["runs"])

    # SIGKILL: no goodbye from anyone; the broker publishes every node's will.
    fleet.stop(signal.SIGKILL)
    with Watcher(broker.url, cluster) as w:
        w.wait(
            "every will fired",
            lambda: all(n in w.fleet.nodes and w.fleet.nodes[n].status == OFFLINE for n in names()),
            timeout_s=15,
        )
    assert "Traceback" not in fleet.output()


def test_a_clean_stop_says_offline_for_every_node(fleet: FleetProc, broker: Mosquitto, cluster: str) -> None:
    fleet.start(5)
    wait_ready(broker, cluster, names(5))
    # A second fleet on the same state directories is refused: each node's directory is locked, as a lone agent's.
    argv = [sys.executable, "-m", "nodeagent", "sim-fleet", "--count", "5", "--broker", broker.url]
    argv += ["--cluster", cluster, "--state-dir", str(fleet.state)]
    twin = subprocess.run(argv, capture_output=True, text=True, env=paho_env(None), cwd=REPO, timeout=60)
    assert twin.returncode == 1 and "is in use by another agent (node sim1" in twin.stderr, twin.stderr
    assert fleet.stop(signal.SIGTERM, timeout_s=30) == 0
    listed = json.loads(ctl(broker, cluster, "nodes", "--json").stdout)
    assert {n["node"]: n["status"] for n in listed} == dict.fromkeys(names(5), OFFLINE)
    assert "Traceback" not in fleet.output()


@pytest.mark.parametrize("paho", PAHO)
def test_the_shared_network_loop_reconnects_every_node_after_a_broker_restart(
    fleet: FleetProc, broker: Mosquitto, cluster: str, paho: str
) -> None:
    fleet.start(10, paho=paho, extra=("--prefix", "n", "--first", "5"))
    nodes = [f"n{i}" for i in range(5, 15)]
    wait_ready(broker, cluster, nodes)
    broker.restart()  # persistence off: the new broker knows nothing, every node must say it all again
    wait_ready(broker, cluster, nodes, timeout_s=30)
    proc = ctl(broker, cluster, "run", "noop", "--nodes", "all", "--json", timeout_s=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["node"] for r in json.loads(proc.stdout)["runs"]) == sorted(nodes)


def test_a_fleet_template_runs_without_a_shell(fleet: FleetProc, broker: Mosquitto, cluster: str) -> None:
    fleet.start(2, extra=("--template", "say=echo 'a;b' $(x)"))
    wait_ready(broker, cluster, names(2))
    proc = ctl(broker, cluster, "run", "say", "--nodes", "all", "--json", timeout_s=60)
    assert proc.returncode == 0, proc.stderr
    tails = [r["result"]["output_tail"] for r in json.loads(proc.stdout)["runs"]]
    assert tails == [["a;b $(x)"], ["a;b $(x)"]]  # one argv element each: no shell expanded anything
    # The default template is not added when --template is given.
    refused = json.loads(ctl(broker, cluster, "run", "noop", "--nodes", "sim1", "--json", timeout_s=60).stdout)
    assert refused["runs"][0]["state"] == "rejected" and "noop" in refused["runs"][0]["reason"]


@pytest.mark.parametrize(
    ("args", "says"),
    [  # the rest of the option checks: tests/unit/test_simfleet.py
        (("--count", "2", "--template", "noop"), "sim-fleet: --template 'noop': expected NAME=COMMAND"),
        (("--count", "2", "--threads", "0"), "sim-fleet: --threads: expected at least 1"),
    ],
)
def test_bad_fleet_options_are_refused_by_name(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    argv = [sys.executable, "-m", "nodeagent", "sim-fleet", "--broker", "mqtt://127.0.0.1:1"]
    argv += ["--state-dir", str(tmp_path), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, env=paho_env(None), cwd=REPO, timeout=30)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "sim").exists()  # refused before any node was built


def test_help_says_tests_and_benchmarks_only() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nodeagent", "sim-fleet", "--help"],
        capture_output=True,
        text=True,
        env=paho_env(None),
        cwd=REPO,
        timeout=30,
    )
    assert proc.returncode == 0 and "TESTS AND BENCHMARKS ONLY" in " ".join(proc.stdout.split())
