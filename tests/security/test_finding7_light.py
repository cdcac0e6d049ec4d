"""Issue 12, finding 7 (its second half): "Light templates bypass the health gate and the power budget, with no
concurrency limit."

What the agent does now: at most ``jobs.light_max`` light jobs run at once, counted and reserved under the runner's
lock, so two submitted together cannot both slip through; a light template passes the same health gate as a heavy job
(the thermal guard's refusal after a critical spell included) and waits while the chassis measures over its power
budget; only a template marked ``diagnostic = true`` (light by rule) is let past both, to look at a sick node, and
says what the gate would have refused it for. Checked on the runner with real processes, on the node's admission,
and on a real agent whose sensor is lost.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from nodeagent.config import JobsSection, from_mapping
from nodeagent.errors import ConfigError, JobRejected
from nodeagent.hw import SimBackend, SimConfig
from nodeagent.hw.fans.sim import SimFan
from nodeagent.jobs.runner import Runner
from nodeagent.jobs.template_config import JobTemplate
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.node.commands import JobHooks
from nodeagent.node.safety import NodeSafety
from nodeagent.policy import PolicyConfig, PowerConfig
from nodeagent.protocol import ChassisPower, Command, JobSpec, encode
from scripts.localcluster import SIM_JOBS_USER, open_to_jobs
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.waits import wait_until

NAP = JobTemplate("nap", ("sleep", "30"), heavy=False)


def runner(tmp_path: Path, light_max: int) -> tuple[Runner, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    open_to_jobs(tmp_path)
    cfg = JobsSection(kinds=(), template=(NAP,), light_max=light_max, user=SIM_JOBS_USER)
    run = Runner(cfg, tmp_path / "jobs", cores=2, sim=True, emit=lambda kind, job, **f: events.append((kind, job)))
    return run, events


def test_at_most_light_max_light_jobs_run_and_one_more_is_refused_naming_it(tmp_path: Path) -> None:
    run, _ = runner(tmp_path, light_max=2)
    try:
        for job in ("l1", "l2"):
            run.submit(JobSpec(id=job, kind="nap"), {}, accepted=lambda d: None)
        with pytest.raises(JobRejected, match=r"2 light job\(s\) already run on this node.*jobs.light_max \(2\)") as e:
            run.submit(JobSpec(id="l3", kind="nap"), {}, accepted=lambda d: None)
        assert e.value.field == "job.kind" and set(run.running) == {"l1", "l2"}
        assert run.cancel("l1")
        wait_until("l1 to end", lambda: None, lambda: "l1" not in run.running, 15)
        run.submit(JobSpec(id="l4", kind="nap"), {}, accepted=lambda d: None)  # a place came free
        assert set(run.running) == {"l2", "l4"}
    finally:
        run.shutdown()


def test_light_jobs_submitted_at_the_same_moment_cannot_both_pass(tmp_path: Path) -> None:
    run, _ = runner(tmp_path, light_max=1)
    go = threading.Barrier(8)
    answers: list[str] = []

    def submit(i: int) -> None:
        go.wait()
        try:
            run.submit(JobSpec(id=f"race{i}", kind="nap"), {}, accepted=lambda d: answers.append("accepted"))
        except JobRejected:
            answers.append("rejected")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(answers) == ["accepted"] + ["rejected"] * 7 and len(run.running) == 1
    finally:
        run.shutdown()


class Hooks:
    """The node's admission with a guard that has seen its sensor fail (latched, the sample unreadable)."""

    def __init__(self, decision: ChassisPower | None = None) -> None:
        self.alerts: list[dict[str, Any]] = []
        sim = SimBackend("n1", SimConfig(faults=("sensor_fail",)), lambda: 0.0)
        safety = NodeSafety(PolicyConfig(), [SimFan(sim)])
        safety.tick(sim.read(0.0), 0.0)
        policy = PolicyConfig(power=PowerConfig(driver="drv"))
        power = PowerBudget("n1", policy, SimBackend("n1", SimConfig(), lambda: 0.0), driver=False, emit=print)
        if decision is not None:
            assert power.received("drv", decision)
        self.hooks = JobHooks(safety, power, None, lambda: JobsSection())
        self.hooks.last_sample = sim.read(1.0)


def test_a_light_template_passes_the_health_gate_a_diagnostic_is_let_past_and_says_why() -> None:
    hooks = Hooks().hooks
    for heavy in (True, False):
        with pytest.raises(JobRejected, match=r"health gate: .*temperature cannot be read") as e:
            hooks.admit(heavy=heavy, force=False)
        assert e.value.field == "health" and "thermal guard refuses heavy jobs" in e.value.reason
    let_past = hooks.admit(heavy=False, force=False, diagnostic=True)
    assert any("temperature cannot be read" in r for r in let_past["health"]) and "forced" not in let_past
    forced = hooks.admit(heavy=False, force=True)
    assert forced["forced"] is True and forced["forced_reasons"]


def test_a_light_job_waits_while_the_chassis_measures_over_budget_and_a_diagnostic_does_not() -> None:
    over = ChassisPower("drv", 0.0, 40.0, 47.5, "nodes", 30.0, nodes=("drv", "n1"), node_idle_w=4.0, node_heavy_w=10.0)
    node = Hooks(over)
    node.hooks.safety = NodeSafety(PolicyConfig(), [])  # a healthy node: only the budget speaks
    node.hooks.last_sample = SimBackend("n1", SimConfig(), lambda: 0.0).read(0.0)
    with pytest.raises(JobRejected, match=r"power budget: chassis of drv measures 47.5 W, over its 40 W budget") as e:
        node.hooks.admit(heavy=False, force=False)
    assert e.value.field == "power"
    assert node.hooks.admit(heavy=False, force=False, diagnostic=True) == {}


def test_a_diagnostic_template_must_be_light() -> None:
    tpl = {"name": "look", "argv": ["dmesg"], "diagnostic": True}
    with pytest.raises(ConfigError, match=r"jobs.template\[0\].diagnostic: a diagnostic template must be light"):
        from_mapping({"jobs": {"template": [tpl]}})
    from_mapping({"jobs": {"template": [{**tpl, "heavy": False}]}})


LOOK = """
[[jobs.template]]
name = "look"
argv = ["/bin/echo", "looked"]
heavy = false
[[jobs.template]]
name = "diagnose"
argv = ["/bin/echo", "diagnosed"]
heavy = false
diagnostic = true
[sim]
faults = ["sensor_fail"]
"""


@pytest.mark.slow
def test_on_a_node_with_a_lost_sensor_only_the_diagnostic_runs(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=LOOK)
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        for job in ("look", "diagnose"):
            w.publish(w.topics.node_cmd("n1"), encode(Command(id=f"{job}1", cmd="run", job=JobSpec(f"{job}1", job))))
        w.wait(
            "both answered", lambda: all(any(e.terminal for e in w.events("n1", f"{j}1")) for j in ("look", "diagnose"))
        )
    (look,) = w.events("n1", "look1")
    assert look.kind == "rejected" and look.field == "health" and "temperature cannot be read" in look.reason
    kinds = {e.kind: e for e in w.events("n1", "diagnose1")}
    assert kinds["finished"].result["output_tail"] == ["diagnosed"]
    assert any("temperature cannot be read" in r for r in kinds["accepted"].data["health"])
