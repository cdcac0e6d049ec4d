"""Closed-loop runs of the simulator with the node's safety in charge, on simulated time (no sleeping).

The job's load heats the simulated node; the guard freezes the job when it runs hot, which takes the load away.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.hw import SimBackend, SimConfig
from nodeagent.hw.fans.sim import SimFan
from nodeagent.node.safety import NodeSafety
from nodeagent.policy import PolicyConfig


class Job:
    """A heavy job: every core busy unless frozen."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.frozen = False

    def load(self) -> float:
        return 0.0 if self.frozen else float(self.cores)


def run(sim_cfg: SimConfig, seconds: int, policy: PolicyConfig | None = None) -> tuple[list[float], list[str], int]:
    job = Job(sim_cfg.cores)
    sim = SimBackend("n1", sim_cfg, job.load)
    safety = NodeSafety(policy or PolicyConfig(), [SimFan(sim)])
    temps, levels, freezes = [], [], 0
    for t in range(seconds):
        sample = sim.read(float(t))
        tick = safety.tick(sample, float(t))
        assert tick.stop_job is False or sim.temp_c >= safety.policy.guard.critical_c
        if tick.freeze_job and not job.frozen:
            freezes += 1
        job.frozen = tick.freeze_job
        temps.append(sim.temp_c)
        levels.append(tick.level)
    return temps, levels, freezes


def test_a_heavy_job_under_a_failed_fan_never_reaches_critical() -> None:
    # Without the fan this job would settle at 25 + 12 + 45 = 82 °C in the model, and with a hotter room at 92.
    for ambient in (25.0, 35.0):
        cfg = SimConfig(ambient_c=ambient, faults=("fan_stop",), temp_noise_c=0.0)
        temps, levels, freezes = run(cfg, 2 * 3600)
        assert max(temps) < PolicyConfig().guard.critical_c, (ambient, max(temps))
        assert freezes > 0 and "hot" in levels
        assert "critical" not in levels


@settings(max_examples=25, deadline=None)
@given(st.floats(15.0, 40.0), st.floats(5.0, 60.0), st.floats(20.0, 60.0))
def test_guarded_runs_stay_below_critical_for_any_room_and_node(ambient: float, tau: float, rise: float) -> None:
    cfg = SimConfig(ambient_c=ambient, time_constant_s=tau, load_rise_c=rise, faults=("fan_stop",), temp_noise_c=0)
    temps, _, _ = run(cfg, 1800)
    # Idle alone (job frozen) must be survivable for the claim to hold: skip rooms where it is not.
    if cfg.ambient_c + cfg.idle_rise_c < PolicyConfig().guard.resume_c:
        assert max(temps) < PolicyConfig().guard.critical_c


def test_the_fan_reacts_in_the_tick_of_the_crossing() -> None:
    """Reaction time: the tick whose sample first crosses warm_c already commands full fan."""
    job = Job(4)
    sim = SimBackend("n1", SimConfig(temp_noise_c=0.0, faults=("fan_stop",)), job.load)
    safety = NodeSafety(PolicyConfig(), [SimFan(sim)])
    warm = safety.policy.guard.warm_c
    for t in range(3600):
        sample = sim.read(float(t))
        tick = safety.tick(sample, float(t))
        if sample.temp_c is not None and sample.temp_c >= warm:
            assert tick.duty_pct == 100.0 and sim._duty_pct == 100.0
            return
    raise AssertionError("never got warm")


def test_an_unreadable_sensor_means_full_fan_and_a_frozen_job() -> None:
    sim = SimBackend("n1", SimConfig(faults=("sensor_fail",)), lambda: 4.0)
    safety = NodeSafety(PolicyConfig(), [SimFan(sim)])
    tick = safety.tick(sim.read(0.0), 0.0)
    assert tick.duty_pct == 100.0 and tick.freeze_job and tick.refuse_heavy
    assert any(e.kind == "sensor_lost" for e in tick.events)


def test_the_health_gate_sees_rising_aer_over_a_minute() -> None:
    sim = SimBackend("n1", SimConfig(faults=("aer_climb",)), lambda: 0.0)
    safety = NodeSafety(PolicyConfig(), [])
    for t in range(10):
        sample = sim.read(float(t))
        safety.tick(sample, float(t))
    refused = safety.admit(sample, force=False)
    assert not refused.admitted and any("AER" in r or "aer" in r.lower() for r in refused.reasons)
    forced = safety.admit(sample, force=True)
    assert forced.admitted and forced.forced and forced.reasons == refused.reasons
    clean = SimBackend("n2", SimConfig(), lambda: 0.0)
    assert NodeSafety(PolicyConfig(), []).admit(clean.read(0.0), force=False).admitted


def test_after_a_critical_spell_only_heavy_jobs_are_held_off() -> None:
    sim = SimBackend("n1", SimConfig(faults=("sensor_fail",)), lambda: 4.0)
    safety = NodeSafety(PolicyConfig(), [SimFan(sim)])
    assert safety.tick(sim.read(0.0), 0.0).refuse_heavy  # a lost sensor counts as critical
    # Judge the guard's refusal alone, on a clean reading (a lost sensor refuses every job by itself).
    cool = SimBackend("n2", SimConfig(), lambda: 0.0).read(1.0)
    heavy = safety.admit(cool, force=False)
    assert not heavy.admitted and any("guard" in r for r in heavy.reasons)
    assert safety.admit(cool, force=False, heavy=False).admitted


def test_boost_is_a_floor_while_a_job_runs() -> None:
    sim = SimBackend("n1", SimConfig(temp_noise_c=0.0), lambda: 0.0)
    safety = NodeSafety(PolicyConfig(), [SimFan(sim)], boost_pct=60.0)
    assert safety.tick(sim.read(0.0), 0.0).duty_pct == 0.0  # cool idle node: the curve says off
    safety.boosting = True
    assert safety.tick(sim.read(1.0), 1.0).duty_pct == 60.0
    safety.mode = 30.0  # an operator's fixed percent wins over the boost
    assert safety.tick(sim.read(2.0), 2.0).duty_pct == 30.0


def test_chassis_view_counts_unknown_and_gone_nodes_as_heat_until_forgotten() -> None:
    from nodeagent.node.safety import ChassisView
    from nodeagent.policy.config import ChassisConfig
    from nodeagent.protocol import Telemetry

    view = ChassisView("node1", ChassisConfig(forget_offline_s=300.0))
    view.status("node2", "online", now=0.0)
    assert view.nodes(0.0)["node2"].temp_c is None  # online, no telemetry yet: unknown heat
    view.telemetry("node2", Telemetry(node="node2", seq=1, t=1000.0, temp_c=50.0), retained=False, now=1.0, wall=1000.0)
    assert view.nodes(1.0)["node2"].temp_c == 50.0
    assert view.readings(1.0)["node2"].t == 1.0  # the power report, stamped when it was received
    view.status("node2", "offline", now=2.0)
    assert "node2" in view.nodes(200.0)  # kept (and stale, so hot) ...
    assert "node2" not in view.nodes(303.0)  # ... until forgotten
    assert "node2" not in view.readings(303.0)  # its power report with it: the budget stops counting it
    view.telemetry("node9", Telemetry(node="node9", seq=1, t=0.0, temp_c=40.0), retained=True, now=5.0, wall=1000.0)
    assert "node9" not in view.nodes(5.0)  # a retained reading from long ago: a node gone long ago
    view.status("node1", "online", now=5.0)
    assert "node1" not in view.nodes(5.0)  # never itself
