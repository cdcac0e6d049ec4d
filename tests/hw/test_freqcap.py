"""The frequency cap on a copy of the recorded CM5 tree: the ladder it offers, the cap, and lifting it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from nodeagent.hw.freqcap import FreqCap
from nodeagent.hw.real import RealBackend
from nodeagent.hw.root import SysfsRoot
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.policy import PolicyConfig
from nodeagent.protocol import ChassisPower

POLICY0 = "sys/devices/system/cpu/cpufreq/policy0"


def test_the_ladder_is_the_drivers_list(tree_copy: Callable[[str], Path]) -> None:
    cap = FreqCap(SysfsRoot(tree_copy("cm5-nanocluster")))
    assert cap.ladder_khz() == tuple(range(1_000_000, 2_400_001, 100_000))


def test_without_a_list_the_ladder_is_100_mhz_steps_between_the_limits(tree_copy: Callable[[str], Path]) -> None:
    root = tree_copy("cm5-nanocluster")
    (root / POLICY0 / "scaling_available_frequencies").unlink()
    (root / POLICY0 / "cpuinfo_max_freq").write_text("2350000\n")
    ladder = FreqCap(SysfsRoot(root)).ladder_khz()
    assert ladder[0] == 1_000_000 and ladder[-2:] == (2_300_000, 2_350_000)


def test_cap_and_lift_write_scaling_max_freq(tree_copy: Callable[[str], Path]) -> None:
    root = tree_copy("cm5-nanocluster")
    backend = RealBackend(root)
    max_freq = root / POLICY0 / "scaling_max_freq"
    assert backend.freq_ladder_khz()[-1] == 2_400_000
    assert backend.cap_freq(1_800_000) == []
    assert max_freq.read_text().strip() == "1800000"
    assert backend.cap_freq(9_000_000) == []  # never above what the chip allows
    assert max_freq.read_text().strip() == "2400000"
    backend.cap_freq(1_500_000)
    assert backend.cap_freq(None) == []  # lifted: back to cpuinfo_max_freq, whatever was there before
    assert max_freq.read_text().strip() == "2400000"


def test_a_refused_write_is_a_line_naming_the_file(tree_copy: Callable[[str], Path]) -> None:
    root = tree_copy("cm5-nanocluster")
    max_freq = root / POLICY0 / "scaling_max_freq"
    max_freq.unlink()
    max_freq.mkdir()  # writing a directory fails for root too
    (problem,) = FreqCap(SysfsRoot(root)).set(1_800_000)
    assert "scaling_max_freq" in problem and "needs root" in problem


def test_a_node_without_cpufreq_offers_nothing(tmp_path: Path) -> None:
    cap = FreqCap(SysfsRoot(tmp_path))
    assert cap.ladder_khz() == () and cap.set(1_800_000) == []


def test_a_cap_left_by_a_crashed_agent_is_lifted_at_the_next_start(tree_copy: Callable[[str], Path]) -> None:

    root = tree_copy("cm5-nanocluster")
    max_freq = root / POLICY0 / "scaling_max_freq"
    marker = root / "state" / "freq-cap"
    decision = ChassisPower(node="n1", t=0.0, budget_w=60.0, measured_w=70.0, source="nodes", estimated_w=50.0)
    first = PowerBudget("n2", PolicyConfig(), RealBackend(root), driver=False, emit=print, marker=marker)
    first.facts("n1", ("chassis",), 0.0)  # n1 drives the chassis (policy.power.driver = "auto")
    assert first.received("n1", replace(decision, cap_khz=1_700_000))
    assert first.apply() == 1_700_000 and max_freq.read_text().strip() == "1700000" and marker.exists()
    # The agent is killed here: no close(). The next one lifts the cap before anything else.
    PowerBudget("n2", PolicyConfig(), RealBackend(root), driver=False, emit=print, marker=marker)
    assert max_freq.read_text().strip() == "2400000" and not marker.exists()


def test_a_node_never_capped_is_never_written(tree_copy: Callable[[str], Path]) -> None:

    root = tree_copy("cm5-nanocluster")
    max_freq = root / POLICY0 / "scaling_max_freq"
    max_freq.write_text("2000000\n")  # the operator's own limit
    budget = PowerBudget("n2", PolicyConfig(), RealBackend(root), driver=False, emit=print, marker=root / "fc")
    assert budget.apply() is None
    budget.close()
    assert max_freq.read_text().strip() == "2000000"
