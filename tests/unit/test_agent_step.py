"""A tick that fails (a backend bug, a broken sensor library) never stops the agent: the fans go full."""

from __future__ import annotations

from pathlib import Path

from nodeagent.agent import Agent
from nodeagent.config import from_mapping
from nodeagent.hw import Sample, SimBackend, SimConfig


class BrokenSim(SimBackend):
    def read(self, now: float) -> Sample:
        raise RuntimeError("a bug in a reader")


def test_a_failing_tick_sends_the_fans_to_full_and_the_loop_goes_on(tmp_path: Path) -> None:
    cfg = from_mapping({"agent": {"node_id": "n1", "state_dir": str(tmp_path)}, "hardware": {"backend": "sim"}})
    backend = BrokenSim("n1", SimConfig(fan_duty_pct=20.0), lambda: 0.0)
    agent = Agent(cfg, backend)
    agent.safe_step()  # must not raise
    agent.safe_step()
    assert backend._duty_pct == 100.0
