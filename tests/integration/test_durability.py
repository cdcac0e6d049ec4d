"""Nothing lost, nothing twice: a real Mosquitto with persistence, killed and restarted under a running job;
agents that lose the broker or are killed with an unacknowledged result; piclusterctl's persistent session
collecting results while it is not running. Real hpcc under Open MPI on simulated nodes."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.mqtt.spool import Spool
from nodeagent.protocol import Command, JobSpec, encode
from tests.conftest import AgentFactory, AgentProc
from tests.integration.durable_helpers import (
    PersistentBroker,
    newest_job,
    run_ctl,
    start_ctl,
    stored_events,
    stored_job,
    wait_for,
)
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

PAHO = ["1.6", "2.x"]
FAST_RECONNECT = "[mqtt]\nreconnect_max_s = 2.0\n"
# hpcc runs all its tests: some 15-30 s on the loaded CI machine, long enough to break things under it.
LONG = ("--param", "n=2500", "--param", "nb=64")


@pytest.fixture
def pbroker(tmp_path: Path) -> Iterator[PersistentBroker]:
    work = tmp_path / "broker"
    work.mkdir()
    broker = PersistentBroker(work)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def pagents(tmp_path: Path, pbroker: PersistentBroker, cluster: str) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path, pbroker, cluster)  # type: ignore[arg-type]
    try:
        yield factory
    finally:
        factory.stop_all()


def _online(url: str, cluster: str, *nodes: str) -> None:
    with Watcher(url, cluster) as w:
        w.wait(f"{nodes} online", lambda: w.online(*nodes), timeout_s=30)


def _logged(agent: AgentProc, line: str, timeout_s: float = 120.0) -> None:
    wait_for(f"{agent.node} to log {line!r}", lambda: line in agent.output(), timeout_s)


def _spool(tmp_path: Path, node: str) -> list[str]:
    spool = Spool(tmp_path / node)
    try:
        return [p.kind for p in spool.pending()]
    finally:
        spool.close()


def _detach(url: str, cluster: str, history: Path, paho: str | None = None) -> str:
    proc = run_ctl(
        url, cluster, history, "run", "hpl", "--per-node", "--nodes", "n1", "--detach", "--json", *LONG, paho=paho
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["detached"] and [n["state"] for n in out["runs"]] == ["accepted"]
    return str(out["job"])


def _results(url: str, cluster: str, history: Path, job: str, paho: str | None = None) -> dict[str, object]:
    """``piclusterctl results JOB --json`` until the job has ended (each call drains the persistent session)."""

    def ended() -> dict[str, object] | None:
        proc = run_ctl(url, cluster, history, "results", job, "--json", paho=paho)
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return out if out.get("state") not in (None, "running") else None

    return wait_for(f"results of {job}", ended, timeout_s=120, poll_s=1.0)  # type: ignore[return-value]


def _once_each(history: Path, job: str) -> list[str]:
    kinds = [str(e["kind"]) for e in stored_events(history, job)]
    for kind in ("accepted", "started", "finished"):
        assert kinds.count(kind) == 1, kinds
    return kinds


@pytest.mark.parametrize("paho", PAHO)
def test_broker_killed_during_a_job_loses_nothing_and_stores_each_event_once(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str, tmp_path: Path, paho: str
) -> None:
    agent = pagents.start("n1", paho=paho, config=FAST_RECONNECT)
    _online(pbroker.url, cluster, "n1")
    history = tmp_path / "history.sqlite3"
    ctl = start_ctl(
        pbroker.url, cluster, history, "run", "hpl", "--per-node", "--nodes", "n1", "--json", *LONG, paho=paho
    )
    try:
        job = wait_for("the job to run", lambda: (j := newest_job(history)) and j.runs[0].state == "running" and j)
        pbroker.wait_saved()  # the controller's persistent session is on disk, as it is after any autosave
        pbroker.kill()
        _logged(agent, "event=mqtt_lost")
        pbroker.start()
        out, err = ctl.communicate(timeout=300)
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.communicate()
    assert ctl.returncode == 0, out + err
    result = json.loads(out)
    assert result["passed"] and result["runs"][0]["state"] == "finished"
    kinds = _once_each(history, job.id)  # type: ignore[union-attr]
    assert "progress" in kinds
    stored = stored_job(history, job.id)  # type: ignore[union-attr]
    assert stored is not None and stored.state == "passed"
    assert stored.runs[0].result == result["runs"][0]["result"]
    wait_for("the agent's spool to empty", lambda: _spool(tmp_path, "n1") == [], 30)


@pytest.mark.parametrize("paho", PAHO)
def test_a_result_made_while_the_broker_is_away_reaches_a_detached_controller(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str, tmp_path: Path, paho: str
) -> None:
    """The agent finishes offline and spools; the controller is not running at all; both come back later."""
    agent = pagents.start("n1", paho=paho, config=FAST_RECONNECT)
    _online(pbroker.url, cluster, "n1")
    history = tmp_path / "history.sqlite3"
    job = _detach(pbroker.url, cluster, history, paho)
    _logged(agent, f"event=job_started job={job}")
    pbroker.stop()
    _logged(agent, f"event=job_finished job={job}")
    assert "finished" in _spool(tmp_path, "n1")  # on disk, waiting for the broker
    pbroker.start()
    out = _results(pbroker.url, cluster, history, job, paho)
    assert out["state"] == "passed", out
    runs = out["runs"]
    assert isinstance(runs, list) and runs[0]["result"]["gflops"] > 0
    _once_each(history, job)
    jobs = run_ctl(pbroker.url, cluster, history, "jobs", "--json", paho=paho)
    assert [j["id"] for j in json.loads(jobs.stdout)] == [job]


@pytest.mark.parametrize("paho", PAHO)
def test_an_agent_killed_with_an_unacknowledged_result_sends_it_after_restart(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str, tmp_path: Path, paho: str
) -> None:
    agent = pagents.start("n1", paho=paho, config=FAST_RECONNECT)
    _online(pbroker.url, cluster, "n1")
    history = tmp_path / "history.sqlite3"
    job = _detach(pbroker.url, cluster, history)
    _logged(agent, f"event=job_started job={job}")
    pbroker.stop()
    _logged(agent, f"event=job_finished job={job}")
    agent.stop(signal.SIGKILL)  # paho's in-memory copy dies with it; the spool's does not
    assert "finished" in _spool(tmp_path, "n1")
    pbroker.start()
    again = pagents.start("n1", paho=paho, config=FAST_RECONNECT)
    out = _results(pbroker.url, cluster, history, job)
    assert out["state"] == "passed", out
    _once_each(history, job)
    assert "event=spool_replay" in again.output()
    wait_for("the agent's spool to empty", lambda: _spool(tmp_path, "n1") == [], 30)


def test_a_job_id_runs_once_even_across_an_agent_restart(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str
) -> None:
    agent = pagents.start("n1")
    _online(pbroker.url, cluster, "n1")
    job = JobSpec(id="once-1", kind="hpl", params={"n": 400, "nb": 32, "p": 1, "q": 1})
    cmd = encode(Command(id="once-1", cmd="run", nodes=("n1",), job=job))
    with Watcher(pbroker.url, cluster) as w:
        w.publish(w.topics.cluster_cmd(), cmd)
        w.publish(w.topics.cluster_cmd(), cmd)
        w.wait("the job to finish", lambda: any(e.kind == "finished" for e in w.events("n1", "once-1")), 90)
        agent.stop()
        pagents.start("n1")
        w.wait("n1 back", lambda: w.online("n1"))
        w.publish(w.topics.node_cmd("n1"), cmd)
        w.wait("two refusals", lambda: [e.kind for e in w.events("n1", "once-1")].count("rejected") == 2)
    events = w.events("n1", "once-1")
    kinds = [e.kind for e in events]
    assert kinds.count("started") == 1 and kinds.count("finished") == 1
    refused = [e for e in events if e.kind == "rejected"]
    assert all(e.data.get("duplicate") and e.field == "job.id" and "runs at most once" in e.reason for e in refused)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs), "seq keeps growing across the restart"


def test_cancel_finds_the_nodes_from_the_history(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str, tmp_path: Path
) -> None:
    pagents.start("n1")
    _online(pbroker.url, cluster, "n1")
    history = tmp_path / "history.sqlite3"
    job = _detach(pbroker.url, cluster, history)
    proc = run_ctl(pbroker.url, cluster, history, "cancel", job)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "n1: cancelled: cancelled by the operator"
    stored = stored_job(history, job)
    assert stored is not None and stored.runs[0].state == "cancelled"
    again = run_ctl(pbroker.url, cluster, history, "cancel", job)
    assert again.returncode == 0 and "nothing to cancel" in again.stderr
    unknown = run_ctl(pbroker.url, cluster, history, "cancel", "no-such-job")
    assert unknown.returncode == 2 and "--nodes" in unknown.stderr
    by_hand = run_ctl(pbroker.url, cluster, history, "cancel", job, "--nodes", "n1")
    assert by_hand.returncode == 0 and by_hand.stdout.strip() == "n1: not running there"


def test_wall_power_from_a_smart_plug_is_stored_with_the_result(
    pagents: AgentFactory, pbroker: PersistentBroker, cluster: str, tmp_path: Path
) -> None:
    pagents.start("n1")
    _online(pbroker.url, cluster, "n1")
    history = tmp_path / "history.sqlite3"
    topic = f"{cluster}/tele/plug1/SENSOR"
    stop = threading.Event()

    def plug() -> None:  # a Tasmota plug reporting 10 and 14 W in turn, as fast as a real one would in a test
        with Watcher(pbroker.url, cluster) as w:
            watts = 10.0
            while not stop.wait(0.2):
                payload = json.dumps({"Time": "2026-11-23T15:00:00", "ENERGY": {"Power": watts, "Voltage": 230}})
                w.session.link.publish(topic, payload.encode(), qos=0)
                watts = 24.0 - watts

    thread = threading.Thread(target=plug, daemon=True)
    thread.start()
    try:
        proc = run_ctl(
            pbroker.url, cluster, history, "run", "hpl", "--nodes", "n1", "--json", "--power-topic", topic, *LONG
        )
    finally:
        stop.set()
        thread.join(10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert 10.0 <= out["wall_power_avg_w"] <= 14.0 and out["wall_power_peak_w"] == 14.0
    # The default run is the cluster run: its Gflops are the one HPL over the selection.
    assert out["mode"] == "cluster" and out["passed"]
    assert out["wall_gflops_per_w"] == pytest.approx(out["gflops"] / out["wall_power_avg_w"], rel=1e-3)
    md = run_ctl(pbroker.url, cluster, history, "report", out["job"], "--format", "md").stdout.strip()
    cells = [c.strip() for c in md.strip("|").split("|")]
    assert cells[1] == "Arm" and cells[3].endswith("W") and cells[4].endswith(" Gflops/W")
    assert float(cells[3][:-1]) == pytest.approx(out["wall_power_avg_w"], rel=0.01)
