"""A tick that fails (a backend bug, a broken sensor library) never stops the agent: the fans go full."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.config import from_mapping
from nodeagent.hw import Sample, SimBackend, SimConfig
from nodeagent.wiring import build


class BrokenSim(SimBackend):
    def read(self, now: float) -> Sample:
        raise RuntimeError("a bug in a reader")


def test_a_failing_tick_sends_the_fans_to_full_and_the_loop_goes_on(tmp_path: Path) -> None:
    cfg = from_mapping({"agent": {"node_id": "n1", "state_dir": str(tmp_path)}, "hardware": {"backend": "sim"}})
    backend = BrokenSim("n1", SimConfig(fan_duty_pct=20.0), lambda: 0.0)
    agent = build(cfg, backend)
    agent.safe_step()  # must not raise
    agent.safe_step()
    assert backend._duty_pct == 100.0


def test_an_unusable_state_dir_keeps_the_agent_running_with_events_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    cfg = from_mapping({"agent": {"node_id": "n1", "state_dir": str(blocker)}, "hardware": {"backend": "sim"}})
    agent = build(cfg, SimBackend("n1", SimConfig(), lambda: 0.0))
    assert "event=spool_unavailable" in caplog.text and str(blocker) in caplog.text
    agent.emit("alert", message="still speaking")
    agent.emit("alert", message="in order")
    assert [p.seq for p in agent.spool.pending()] == [1, 2]  # unacknowledged (no broker here), kept in memory
    assert agent.spool.first_sight("j1") and not agent.spool.first_sight("j1")
