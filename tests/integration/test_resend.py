"""What a node said about a job outlives the broker: a broker that crashes loses the events it had acknowledged
(and queued for piclusterctl's persistent session) since its last save; piclusterctl asks the nodes again
(``resend``) and gets the same events. A job the node never received is refused for good; jobs a killed agent
left without a verdict (running or queued) are reported failed when it comes back. Real agents, real Mosquitto."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from nodeagent.protocol import Command, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.durable_helpers import start_ctl, wait_for
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

# Two templates that sleep: a light one (runs beside anything) and a heavy one (one at a time, queues).
SLEEPERS = """
[[jobs.template]]
name = "nap"
argv = ["sleep", "{seconds}"]
heavy = false
timeout_s = 120
[jobs.template.params.seconds]
type = "float"
[[jobs.template]]
name = "hold"
argv = ["sleep", "{seconds}"]
timeout_s = 120
[jobs.template.params.seconds]
type = "float"
"""


def _online(broker: Mosquitto, cluster: str, *nodes: str) -> None:
    with Watcher(broker.url, cluster) as w:
        w.wait(f"{nodes} online", lambda: w.online(*nodes), timeout_s=30)


def test_results_gets_back_a_verdict_the_broker_lost(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agent = agents.start("n1", config=SLEEPERS)
    _online(broker, cluster, "n1")
    proc = ctl(broker, cluster, "run", "nap", "--nodes", "n1", "--set", "seconds=1", "--detach", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json.loads(proc.stdout)["job"]
    wait_for("the job to finish", lambda: f"event=job_finished job={job}" in agent.output(), 30)
    # The broker acknowledged the verdict and queued it for piclusterctl's session; a crash forgets both.
    broker.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    broker.proc.wait()  # type: ignore[union-attr]
    broker.start()
    _online(broker, cluster, "n1")
    out = json.loads(ctl(broker, cluster, "results", job, "--json").stdout)
    assert out["state"] == "passed", out
    assert out["runs"][0]["result"]["returncode"] == 0
    assert f"event=job_resent job={job} events=3" in agent.output()  # accepted, started, finished


def test_a_job_its_node_never_received_is_refused_for_good(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=SLEEPERS)
    _online(broker, cluster, "n1")
    lost = JobSpec(id="nap-lost-1", kind="nap", params={"seconds": 0.1})
    with Watcher(broker.url, cluster) as w:
        w.publish(w.topics.cluster_cmd(), encode(Command(id="q1", cmd="resend", nodes=("n1",), job_id=lost.id)))
        refused = w.wait("the refusal", lambda: [e for e in w.events("n1", lost.id) if e.kind == "rejected"])
        assert refused[0].field == "job.id" and "never reached n1" in refused[0].reason
        assert not refused[0].data.get("duplicate")  # this is the job's verdict on n1
        w.publish(w.topics.node_cmd("n1"), encode(Command(id=lost.id, cmd="run", job=lost)))
        late = w.wait("the late copy's answer", lambda: w.events("n1", lost.id)[1:])
        assert late[0].data.get("duplicate")
        w.publish(w.topics.cluster_cmd(), encode(Command(id="q2", cmd="resend", nodes=("n1",), job_id=lost.id)))
        again = w.wait("the verdict said again", lambda: w.events("n1", lost.id)[2:])
    assert again[0].seq == refused[0].seq and again[0].reason == refused[0].reason  # the same event, not a new one
    assert "started" not in [e.kind for e in w.events("n1", lost.id)]


def test_jobs_a_killed_agent_left_running_or_queued_end_failed_when_it_returns(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agent = agents.start("n1", config=SLEEPERS)
    _online(broker, cluster, "n1")
    with Watcher(broker.url, cluster) as w:
        for job in ("hold-a", "hold-b"):
            spec = JobSpec(id=job, kind="hold", params={"seconds": 60}, queue=True)
            w.publish(w.topics.node_cmd("n1"), encode(Command(id=job, cmd="run", job=spec)))
        w.wait("b queued", lambda: any(e.kind == "queued" for e in w.events("n1", "hold-b")))
        agent.stop(signal.SIGKILL)
        agents.start("n1", config=SLEEPERS)
        for job in ("hold-a", "hold-b"):
            ended = w.wait(f"{job} failed", lambda j=job: [e for e in w.events("n1", j) if e.kind == "failed"])
            assert ended[0].reason.startswith("the agent stopped unexpectedly"), ended[0].reason
    once = {e.seq: e.kind for e in w.events("n1", "hold-b")}  # the restarted agent replays what was unacked
    assert [once[seq] for seq in sorted(once)] == ["accepted", "queued", "failed"]


def test_a_followed_run_gets_its_verdict_across_a_broker_crash(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    """The broker dies while the job runs and comes back after it ended: piclusterctl's session and the agent
    both reconnect, in either order; the verdict published meanwhile reaches the run all the same."""
    agent = agents.start("n1", config=SLEEPERS)
    _online(broker, cluster, "n1")
    run = start_ctl(broker.url, cluster, tmp_path / "h.sqlite3", "run", "nap", "--nodes", "n1", "--set", "seconds=3")
    try:
        wait_for("the job to start", lambda: "event=job_started" in agent.output(), 30)
        broker.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        broker.proc.wait()  # type: ignore[union-attr]
        wait_for("the job to end", lambda: "event=job_finished" in agent.output(), 30)
        broker.start()
        t0 = time.monotonic()
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, out + err
    assert "PASSED" in out and time.monotonic() - t0 < 20
