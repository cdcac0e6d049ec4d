"""More job kinds end to end: real agents (processes) over a real Mosquitto, real stress-ng, real templates.

Queueing and refusal, cancel of running and queued jobs, rate-limited log events, the output cap, no shell in
templates, and kinds the node does not allow.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from controller.dispatch import NOT_SENT
from nodeagent.jobs.runner import _session_procs
from nodeagent.protocol import Command, Event, JobSpec, NodeFacts, decode, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

# A template that prints its one argument back, byte for byte: proves the value was one literal argv element.
ECHO = f"""
[[jobs.template]]
name = "echo-arg"
argv = ["{sys.executable}", "-c", "import sys; sys.stdout.write(repr(sys.argv[1:]))", "{{text}}"]
heavy = false
timeout_s = 60
[jobs.template.params.text]
type = "str"
"""
# A template that floods its output: 20000 lines as fast as Python prints them.
FLOOD = f"""
[[jobs.template]]
name = "flood"
argv = ["{sys.executable}", "-c", "import sys\\nfor i in range({{lines}}): print('line', i)"]
heavy = false
[jobs.template.params.lines]
type = "int"
min = 1
max = 1000000
default = 20000
"""
STRESS = 'kinds = ["stress"]\n'


def run_cmd(w: Watcher, node: str, job: JobSpec) -> None:
    w.publish(w.topics.node_cmd(node), encode(Command(id=job.id, cmd="run", job=job)))


def cancel_cmd(w: Watcher, node: str, job_id: str) -> None:
    w.publish(w.topics.node_cmd(node), encode(Command(id=f"{job_id}.c", cmd="cancel", job_id=job_id)))


def kinds_of(w: Watcher, node: str, job: str) -> list[str]:
    return [e.kind for e in w.events(node, job)]


def event(w: Watcher, node: str, job: str, kind: str) -> Event | None:
    return next((e for e in w.events(node, job) if e.kind == kind), None)


def facts(w: Watcher, node: str) -> NodeFacts:
    msg = next(m for m in reversed(w.seen) if m.topic == w.topics.facts(node))
    return decode(msg.payload, NodeFacts)


def test_stress_runs_real_stress_ng_and_reports_bogo_ops(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config=STRESS, paho="1.6")
    agents.start("n2", config=STRESS, paho="2.x")
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1", "n2"))
        assert facts(w, "n1").capabilities == ("stress",)
    proc = ctl(
        broker, cluster, "run", "stress", "--nodes", "n[1-2]", "--set", "duration_s=2", "--set", "workers=1", "--json"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and [n["node"] for n in out["runs"]] == ["n1", "n2"]
    for node in out["runs"]:
        r = node["result"]
        assert node["plan"] == {"stressor": "cpu", "workers": 1, "duration_s": 2}
        (cpu,) = r["stressors"]
        assert cpu["stressor"] == "cpu" and cpu["bogo_ops"] > 0 and cpu["bogo_ops_per_s"] > 0
        assert 1.5 < cpu["real_time_s"] < 30
        assert r["bogo_ops_per_s"] == pytest.approx(cpu["bogo_ops_per_s"], rel=1e-3)


def test_bad_stress_parameter_is_refused_by_name(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config=STRESS)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
    proc = ctl(broker, cluster, "run", "stress", "--nodes", "n1", "--set", "workers=lots")
    assert proc.returncode == 1
    assert "parameter 'workers': expected a whole number, got 'lots'" in proc.stdout + proc.stderr
    proc = ctl(broker, cluster, "run", "stress", "--nodes", "n1", "--set", "duration=5")
    assert "unknown parameter 'duration'" in proc.stdout + proc.stderr


def test_cancel_mid_run_kills_every_stress_ng_process(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config=STRESS)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        run_cmd(w, "n1", JobSpec(id="s-long", kind="stress", params={"duration_s": 300, "workers": 2}))
        started = w.wait("started", lambda: event(w, "n1", "s-long", "started"))
        sid = started.data["pid"]
        # stress-ng's parent plus its two cpu workers, all in the session the runner created
        w.wait("3 stress-ng processes", lambda: len(_session_procs(sid)) >= 3)
        cancel_cmd(w, "n1", "s-long")
        w.wait("cancelled", lambda: event(w, "n1", "s-long", "cancelled"))
        assert _session_procs(sid) == []
        assert "finished" not in kinds_of(w, "n1", "s-long")


def test_second_heavy_job_is_refused_or_queued_and_queued_jobs_cancel(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=STRESS + "queue_max = 2\n")
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        run_cmd(w, "n1", JobSpec(id="a", kind="stress", params={"duration_s": 300, "workers": 1}))
        w.wait("a started", lambda: event(w, "n1", "a", "started"))
        run_cmd(w, "n1", JobSpec(id="b", kind="stress", params={"duration_s": 1}))
        rejected = w.wait("b rejected", lambda: event(w, "n1", "b", "rejected"))
        assert "busy with job a" in rejected.reason and "--queue" in rejected.reason
        for job in ("c", "d"):
            run_cmd(w, "n1", JobSpec(id=job, kind="stress", params={"duration_s": 1, "workers": 1}, queue=True))
        c = w.wait("c queued", lambda: event(w, "n1", "c", "queued"))
        d = w.wait("d queued", lambda: event(w, "n1", "d", "queued"))
        assert (c.data["position"], d.data["position"]) == (1, 2) and c.data["running"] == "a"
        run_cmd(w, "n1", JobSpec(id="e", kind="stress", params={"duration_s": 1}, queue=True))
        full = w.wait("e rejected", lambda: event(w, "n1", "e", "rejected"))
        assert "queue is full (2 jobs, jobs.queue_max)" in full.reason
        cancel_cmd(w, "n1", "d")
        w.wait("d cancelled", lambda: event(w, "n1", "d", "cancelled"))
        cancel_cmd(w, "n1", "a")
        w.wait("c finished", lambda: event(w, "n1", "c", "finished"), timeout_s=60)
        assert kinds_of(w, "n1", "c")[:3] == ["accepted", "queued", "started"]
        assert "started" not in kinds_of(w, "n1", "d")
        assert kinds_of(w, "n1", "a")[-1] == "cancelled"
        # An id is judged once: a copy of the refused job (a redelivery, a resend) never runs later behind the
        # operator's back; a new attempt is a new job id.
        run_cmd(w, "n1", JobSpec(id="b", kind="stress", params={"duration_s": 1, "workers": 1}))
        w.wait("b refused again", lambda: len([e for e in w.events("n1", "b") if e.kind == "rejected"]) == 2)
        assert [e for e in w.events("n1", "b") if e.kind == "rejected"][-1].data.get("duplicate") is True
        run_cmd(w, "n1", JobSpec(id="b2", kind="stress", params={"duration_s": 1, "workers": 1}))
        w.wait("b2 finished", lambda: event(w, "n1", "b2", "finished"), timeout_s=60)


def test_log_events_are_rate_limited_and_output_is_capped(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agent = agents.start("n1", config="kinds = []\nlog_lines_per_s = 5\nmax_output_kb = 16\n" + FLOOD)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        assert facts(w, "n1").capabilities == ("flood",)
        run_cmd(w, "n1", JobSpec(id="f1", kind="flood"))
        done = w.wait("finished", lambda: event(w, "n1", "f1", "finished"), timeout_s=60)
        logs = [e for e in w.events("n1", "f1") if e.kind == "log"]
        notes = [e for e in logs if e.message.startswith("suppressed")]
        lines = [e for e in logs if not e.message.startswith("suppressed")]
        started = event(w, "n1", "f1", "started")
        assert started is not None
        window_s = done.t - started.t
        assert 5 <= len(lines) <= 5 * (window_s + 2)  # at most 5 a second, never 20000
        assert lines[0].message == "line 0" and lines[0].data == {"stream": "output"}
        suppressed = sum(int(e.message.split()[1]) for e in notes)
        assert suppressed + len(lines) == 20000  # every line is either published or counted
        assert done.result is not None and done.result["output_dropped_bytes"] > 0
    log = agent.log.parent / "jobs" / "f1" / "output.log"
    assert log.stat().st_size == 16 * 1024
    assert done.result["output_tail"][-1] == "line 19999"  # the parsers still see the end of the output


def test_template_values_reach_the_program_literally(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config="kinds = []\n" + ECHO)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
    marker = Path(agents.tmp_path) / "pwned"
    text = f"a; touch {marker} $(touch {marker}) `touch {marker}` && echo 'x' | cat > {marker} \"q\" *"
    proc = ctl(broker, cluster, "run", "echo-arg", "--nodes", "n1", "--set", f"text={text}", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (node,) = json.loads(proc.stdout)["runs"]
    assert node["result"]["output_tail"] == [repr([text])]
    assert not marker.exists()
    proc = ctl(broker, cluster, "run", "template", "echo-arg", "--nodes", "n1", "--json")
    assert proc.returncode == 1 and "parameter 'text' is required" in proc.stdout


def test_kinds_and_templates_not_allowed_are_rejected_with_the_reason(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=STRESS + ECHO)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        assert facts(w, "n1").capabilities == ("stress", "echo-arg")
    proc = ctl(broker, cluster, "run", "llama-bench", "--nodes", "n1", "--set", "model=/nope.gguf", "--json")
    assert proc.returncode == 1
    (node,) = json.loads(proc.stdout)["runs"]
    assert node["state"] == "rejected"
    assert (
        node["reason"] == "job kind 'llama-bench' is not allowed on this node (jobs.kinds: stress; templates: echo-arg)"
    )
    proc = ctl(broker, cluster, "run", "rm-rf", "--nodes", "n1", "--json")
    assert "job kind 'rm-rf' is not allowed" in proc.stdout


def test_light_template_runs_beside_a_heavy_job(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config=STRESS + ECHO)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        run_cmd(w, "n1", JobSpec(id="heavy", kind="stress", params={"duration_s": 300, "workers": 1}))
        w.wait("heavy started", lambda: event(w, "n1", "heavy", "started"))
        run_cmd(w, "n1", JobSpec(id="light", kind="echo-arg", params={"text": "hi"}))
        done = w.wait("light finished", lambda: event(w, "n1", "light", "finished"))
        assert done.result is not None and done.result["output_tail"] == ["['hi']"]
        assert "cancelled" not in kinds_of(w, "n1", "heavy")
        t0 = time.monotonic()
        cancel_cmd(w, "n1", "heavy")
        w.wait("heavy cancelled", lambda: event(w, "n1", "heavy", "cancelled"))
        assert time.monotonic() - t0 < 30


def test_a_template_job_detaches_and_its_result_is_kept_in_the_history(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config="kinds = []\n" + ECHO)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
    proc = ctl(broker, cluster, "run", "echo-arg", "--nodes", "n1", "--set", "text=hi", "--detach", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["detached"] and out["runs"][0]["state"] in ("accepted", "running", "finished")
    deadline = time.monotonic() + 30
    while True:
        stored = json.loads(ctl(broker, cluster, "results", out["job"], "--json").stdout)
        if stored["state"] != "running" or time.monotonic() > deadline:
            break
    assert stored["state"] == "passed" and stored["kind"] == "echo-arg", stored
    assert stored["runs"][0]["result"]["output_tail"] == ["['hi']"]
    table = ctl(broker, cluster, "results", out["job"]).stdout
    assert "EXIT" in table and "PASSED" in table and "Gflops" not in table  # its own table, not HPL's
    listed = json.loads(ctl(broker, cluster, "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [out["job"]]


def test_a_selected_node_that_is_offline_is_in_the_history_as_not_sent(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    """Else a job whose nodes were all offline stayed 'running' in the history for ever, and one with some
    offline forgot them."""
    agents.start("n1", config="kinds = []\n" + ECHO)
    n2 = agents.start("n2", config="kinds = []\n" + ECHO)
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("n1", "n2"))
        n2.stop()
        w.wait("n2 offline", lambda: w.fleet.nodes["n2"].status == "offline")
    proc = ctl(broker, cluster, "run", "echo-arg", "--nodes", "n[1-2]", "--set", "text=hi", "--detach", "--json")
    out = json.loads(proc.stdout)
    assert [(n["node"], n["state"]) for n in out["runs"]] == [("n1", "accepted"), ("n2", "offline")]
    assert proc.returncode == 1  # not every node took it
    stored = json.loads(ctl(broker, cluster, "results", out["job"], "--json").stdout)
    assert {r["node"]: (r["state"], r["reason"]) for r in stored["runs"]}["n2"] == ("offline", NOT_SENT)
    proc = ctl(broker, cluster, "run", "echo-arg", "--nodes", "n2", "--set", "text=hi", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["runs"][0]["state"] == "offline"
    stored = json.loads(ctl(broker, cluster, "results", json.loads(proc.stdout)["job"], "--json").stdout)
    assert stored["state"] == "offline" and [r["node"] for r in stored["runs"]] == ["n2"]
