"""The chassis power budget: admit heavy jobs by estimate, and cap the CPU frequency by measurement.

``admit_heavy`` adds up the board and every node (heavy estimate for nodes running or starting a heavy job,
idle estimate for the rest) and admits only while the total stays within ``budget_w``.

``cap_frequency`` is the backstop for when the estimates are wrong: while the measured chassis power is above
``budget_w`` it lowers the nodes' maximum CPU frequency one available step (100 MHz on the BCM2712) at a time,
at most once per ``step_interval_s``; once the power is below ``budget_w - restore_margin_w`` it raises it again
the same way. It never caps below ``min_freq_khz`` (nor the lowest available frequency), and an unknown
measurement (``None``) holds the cap where it is. One decision serves the whole chassis; every node applies it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from nodeagent.policy.config import PowerConfig
from nodeagent.policy.health_gate import Admission
from nodeagent.protocol.messages import ChassisPower


@dataclass(frozen=True)
class NodePower:
    """Estimated power of one node: idle, and running a heavy job (all cores busy)."""

    idle_w: float
    heavy_w: float


def default_estimate(cfg: PowerConfig) -> NodePower:
    """The configured estimate for a node without its own (a CM5 by default)."""
    return NodePower(idle_w=cfg.node_idle_w, heavy_w=cfg.node_heavy_w)


def chassis_load_w(estimates: Mapping[str, NodePower], heavy: Collection[str], cfg: PowerConfig) -> float:
    """Estimated chassis power: the board, plus every node (those in ``heavy`` at their heavy estimate)."""
    fallback = default_estimate(cfg)
    nodes = set(estimates) | set(heavy)
    per_node = (
        estimates.get(n, fallback).heavy_w if n in heavy else estimates.get(n, fallback).idle_w for n in sorted(nodes)
    )
    return cfg.base_w + sum(per_node)


@dataclass(frozen=True)
class NodeReading:
    """The latest report of one node of the chassis, as its driver received it."""

    power_w: float | None  # the node's own measurement (PMIC rails); None where it has none
    busy: bool  # running a job
    t: float  # when it was received, on the driver's clock


def chassis_power_w(
    readings: Mapping[str, NodeReading],
    input_w: float | None,
    cfg: PowerConfig,
    now: float,
    stale_after_s: float,
) -> tuple[float | None, str]:
    """The chassis input power now, and where it came from.

    ``"input"``: the driver's own input monitor (INA219/226 on the chassis supply) measures everything.
    ``"nodes"``: the board's ``base_w`` plus every node's reading; a node without a fresh reading counts at its
    estimate, heavy when busy or silent (a node that stopped reporting may still run flat out).
    ``"none"`` (None): no measurement at all; the cap then holds where it is.
    """
    if input_w is not None and input_w == input_w:
        return input_w, "input"
    fresh = {n: r for n, r in readings.items() if now - r.t <= stale_after_s and r.power_w is not None}
    if not fresh or any(r.power_w != r.power_w for r in fresh.values()):
        return None, "none"
    total = cfg.base_w
    for node, r in readings.items():
        if node in fresh:
            total += r.power_w or 0.0
        else:
            silent = now - r.t > stale_after_s
            total += cfg.node_heavy_w if r.busy or silent else cfg.node_idle_w
    return total, "nodes"


def admit_heavy(
    estimates: Mapping[str, NodePower],
    running_heavy: Collection[str],
    cfg: PowerConfig,
    *,
    starting: Collection[str],
) -> Admission:
    """May the nodes in ``starting`` begin a heavy job, with ``running_heavy`` already running one?

    ``estimates``: every node of the chassis (a node missing from it counts with the configured default).
    """
    heavy = set(running_heavy) | set(starting)
    load_w = chassis_load_w(estimates, heavy, cfg)
    if load_w <= cfg.budget_w:
        return Admission(admitted=True)
    reason = (
        f"estimated chassis power {load_w:.1f} W with {len(heavy)} node(s) busy ({', '.join(sorted(heavy))}) "
        f"would exceed the {cfg.budget_w:g} W budget (policy.power.budget_w)"
    )
    return Admission(admitted=False, reasons=(reason,))


@dataclass(frozen=True)
class PowerState:
    """What the frequency cap remembers between ticks. Start with ``PowerState()``."""

    cap_khz: int | None = None  # None: not capped (the highest available frequency)
    last_step_t: float | None = None  # when the cap last moved


@dataclass(frozen=True)
class PowerEvent:
    """The cap moved one step: ``freq_capped`` (down) or ``freq_restored`` (up)."""

    kind: Literal["freq_capped", "freq_restored"]
    from_khz: int
    to_khz: int
    measured_w: float
    budget_w: float
    t: float


def _ladder(available_freqs_khz: tuple[int, ...], cfg: PowerConfig) -> list[int]:
    """The frequencies the cap may take, lowest first: available ones from ``min_freq_khz`` up."""
    freqs = sorted(set(available_freqs_khz))
    if not freqs:
        raise ValueError("cap_frequency: available_freqs_khz is empty (no cpufreq on this node?)")
    allowed = [f for f in freqs if f >= cfg.min_freq_khz]
    return allowed or freqs[-1:]


def cap_frequency(
    measured_w: float | None,
    state: PowerState,
    cfg: PowerConfig,
    now: float,
    available_freqs_khz: tuple[int, ...],
) -> tuple[int, PowerState, tuple[PowerEvent, ...]]:
    """The maximum CPU frequency (kHz) the nodes may run at now, the next state, and the steps taken.

    ``measured_w``: the chassis input power, ``None`` when unknown. ``available_freqs_khz``: cpufreq's
    ``scaling_available_frequencies``.
    """
    ladder = _ladder(available_freqs_khz, cfg)
    cap = ladder[-1] if state.cap_khz is None else max([f for f in ladder if f <= state.cap_khz] or ladder[:1])
    index = ladder.index(cap)
    due = state.last_step_t is None or now - state.last_step_t >= cfg.step_interval_s
    if measured_w is None or measured_w != measured_w or not due:
        return cap, state, ()
    if measured_w > cfg.budget_w and index > 0:
        kind: Literal["freq_capped", "freq_restored"] = "freq_capped"
        new = ladder[index - 1]
    elif measured_w < cfg.budget_w - cfg.restore_margin_w and index < len(ladder) - 1:
        kind, new = "freq_restored", ladder[index + 1]
    else:
        return cap, PowerState(None if cap == ladder[-1] else cap, state.last_step_t), ()
    event = PowerEvent(kind, cap, new, measured_w, cfg.budget_w, now)
    return new, PowerState(None if new == ladder[-1] else new, now), (event,)


def admit_against(decision: ChassisPower, starting: set[str]) -> Admission:
    """May the nodes in ``starting`` of this driver's chassis all begin a heavy job, by its last decision?
    Nodes of another chassis are not counted; busy nodes count at the heavy estimate, the rest idle."""
    chassis = {*decision.nodes, decision.node}
    starting = starting & chassis
    if not starting:
        return Admission(admitted=True)
    cfg = PowerConfig(
        budget_w=decision.budget_w,
        base_w=decision.base_w,
        node_idle_w=decision.node_idle_w,
        node_heavy_w=max(decision.node_heavy_w, decision.node_idle_w),
        restore_margin_w=0.0,
    )
    estimates = {n: NodePower(cfg.node_idle_w, cfg.node_heavy_w) for n in chassis}
    return admit_heavy(estimates, set(decision.busy) - starting, cfg, starting=starting)


def admit_light(decision: ChassisPower, node: str) -> Admission:
    """May ``node`` start a light job, by its driver's last decision? A light job is not counted at the heavy
    estimate, but nothing new starts while the chassis measures over its budget (the frequency cap is still
    stepping down): the one thing a light job must not do is add load to a supply already past its limit."""
    if node not in {*decision.nodes, decision.node}:
        return Admission(admitted=True)
    if decision.measured_w is None or decision.measured_w <= decision.budget_w:
        return Admission(admitted=True)
    reason = (
        f"chassis of {decision.node} measures {decision.measured_w:.1f} W, over its {decision.budget_w:g} W budget "
        "(policy.power.budget_w): light jobs wait until it is back within it"
    )
    return Admission(admitted=False, reasons=(reason,))
