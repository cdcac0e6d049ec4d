"""The chassis power budget closed over five simulated NanoCluster nodes, on simulated time (no sleeping).

node1 is the driver: it adds up the nodes' readings, moves the cap and "publishes" its decision, which every
node applies to its own (simulated) scaling_max_freq; the simulator's power follows the frequency. A heavy load
that would draw more than the budget is held under it by the cap, and the cap is lifted when the load goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.hw import SimBackend, SimConfig
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.policy import NodeReading, PolicyConfig, PowerConfig

NODES = [f"node{i}" for i in range(1, 6)]
BASE_W = 3.6


class Chassis:
    def __init__(self, budget_w: float, load: float, step_s: float = 5.0) -> None:
        self.load = load
        # The default restore margin (5 W) is more than one 100 MHz step of five busy CM5s (about 2.4 W), so the cap
        # settles instead of stepping up and down around the budget.
        self.policy = PolicyConfig(power=PowerConfig(budget_w=budget_w, step_interval_s=step_s, driver="node1"))
        self.sims = {n: SimBackend(n, SimConfig(), lambda: self.load) for n in NODES}
        self.events: list[dict[str, Any]] = []
        self.budgets = {
            n: PowerBudget(n, self.policy, sim, driver=n == "node1", emit=self.emit) for n, sim in self.sims.items()
        }

    def emit(self, kind: str, job: str = "", **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})

    def tick(self, t: float) -> tuple[float, int | None, list[float]]:
        """One second: every node reads, the driver decides, every node applies. Returns the chassis power,
        the cap in force and the nodes' frequencies."""
        samples = {n: sim.read(t) for n, sim in self.sims.items()}
        busy = self.load > 0
        others = {n: NodeReading(samples[n].power_w, busy, t) for n in NODES[1:]}
        decision = self.budgets["node1"].decide(samples["node1"], busy, others, t, t)
        if decision is not None:
            for b in self.budgets.values():
                assert b.received("node1", decision)
        caps = [b.apply() for b in self.budgets.values()]
        assert len(set(caps)) == 1, "the nodes disagree about the cap"
        total = BASE_W + sum(s.power_w or 0.0 for s in samples.values())
        return total, caps[0], [s.freq_mhz or 0.0 for s in samples.values()]


def test_five_busy_nodes_are_capped_under_the_budget_and_restored_when_idle() -> None:
    # Flat out, five CM5s draw 3.6 + 5 × 9.4 = 50.6 W; the budget is 35 W.
    chassis = Chassis(budget_w=35.0, load=4.0)
    history = [chassis.tick(float(t)) for t in range(200)]
    assert history[0][0] > 35.0  # unchecked, the load is over budget
    settled = history[100:]
    assert all(total <= 35.0 for total, _, _ in settled), "the cap did not hold the chassis under its budget"
    cap = settled[-1][1]
    assert cap is not None and cap < 2_400_000
    assert all(f <= cap / 1000 for _, _, freqs in settled for f in freqs)
    capped = [e for e in chassis.events if e.get("data", {}).get("power") == "freq_capped"]
    assert capped and all(e["data"]["to_khz"] == e["data"]["from_khz"] - 100_000 for e in capped)  # one step at a time

    chassis.load = 0.0
    after = [chassis.tick(float(t)) for t in range(200, 400)]
    assert after[-1][1] is None, "the cap was not lifted when the load went"
    assert any(e.get("data", {}).get("power") == "freq_restored" for e in chassis.events)


@settings(max_examples=25, deadline=None)
@given(st.floats(30.0, 60.0), st.floats(1.0, 10.0))
def test_any_budget_the_cap_can_meet_is_met_within_the_steps_it_needs(budget: float, step_s: float) -> None:
    chassis = Chassis(budget_w=budget, load=4.0, step_s=step_s)
    steps = (2400 - 1500) // 100
    settle = int(steps * step_s) + 10
    history = [chassis.tick(float(t)) for t in range(settle + 60)]
    floor_w = BASE_W + 5 * SimBackend("x", SimConfig(), lambda: 4.0).devices.power_w(4, 4, 1500 / 2400)
    if budget >= floor_w:
        assert all(total <= budget + 1e-6 for total, _, _ in history[settle:])
    else:  # the budget is below what 1.5 GHz draws: the cap goes to the floor and stays there
        assert history[-1][1] == 1_500_000


def test_the_cap_applies_even_when_its_marker_cannot_be_written(tmp_path: Path) -> None:
    """The marker (for the next agent, after a crash) lives in the state dir; a full or read-only state dir must
    not keep the chassis over its budget."""
    (tmp_path / "file").write_text("")
    chassis = Chassis(budget_w=35.0, load=4.0)
    chassis.budgets = {
        n: PowerBudget(n, chassis.policy, sim, driver=n == "node1", emit=chassis.emit, marker=tmp_path / "file" / "cap")
        for n, sim in chassis.sims.items()
    }
    history = [chassis.tick(float(t)) for t in range(200)]
    assert all(total <= 35.0 for total, _, _ in history[100:]) and history[-1][1] is not None
