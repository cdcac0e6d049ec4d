"""The chassis fan: one fan for every node of a chassis (the Sipeed NanoCluster's, driven from slot 1).

Slot 1 runs the fan curve of ``[policy.fan]`` (with its hysteresis and rate limits) on the temperature of the
*hottest* node, its own included, from the other nodes' telemetry. The fan runs full, at once, when:

- slot 1 has lost the broker (``broker_connected=False``): it cannot know the other nodes' temperatures;
- any node's telemetry is older than ``stale_after_s``: a silent node is treated like an unreadable sensor;
- any node's temperature is unreadable, or its own guard asks for a full fan (warm and above, or latched);
- the hottest temperature is at or above the guard's ``warm_c``.

On a NanoCluster the nodes have no fan of their own, so this fan *is* each node's fan: that is why it uses the
same curve and the same warm level as a single node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodeagent.policy.config import PolicyConfig
from nodeagent.policy.fan import FanMode, FanState, fan_duty, readable


@dataclass(frozen=True)
class NodeHeat:
    """The latest telemetry of another node of the chassis.

    ``t`` is when slot 1 *received* it, on the same clock as ``now`` (not the sender's time stamp, so that
    nodes whose clocks disagree are not taken for stale, or for fresh).
    """

    temp_c: float | None
    t: float
    fan_full: bool = False  # that node's GuardDecision.fan_full


@dataclass(frozen=True)
class ChassisSelf:
    """Slot 1 itself: its own temperature, its broker session, its guard, and the operator's fan mode."""

    temp_c: float | None
    broker_connected: bool
    fan_full: bool = False
    mode: FanMode = "auto"


@dataclass(frozen=True)
class ChassisState:
    """What the chassis fan remembers between ticks. Start with ``ChassisState()``."""

    fan: FanState = field(default_factory=FanState)


def _survey(
    nodes: Mapping[str, NodeHeat], own: ChassisSelf, cfg: PolicyConfig, now: float
) -> tuple[str, float | None, list[str]]:
    """The hottest readable node (name, temperature) and every reason to run the fan full."""
    full: list[str] = []
    if not own.broker_connected:
        full.append("broker lost: the other nodes' temperatures are unknown")
    if not readable(own.temp_c):
        full.append("own temperature unreadable")
    if own.fan_full:
        full.append("own thermal guard asks for full fan")
    hottest, hottest_c = "self", own.temp_c if readable(own.temp_c) else None
    for name in sorted(nodes) if own.broker_connected else ():
        heat = nodes[name]
        age_s = now - heat.t
        if age_s > cfg.chassis.stale_after_s:
            full.append(f"{name}: telemetry {age_s:.1f} s old (stale after {cfg.chassis.stale_after_s:g} s)")
            continue
        if not readable(heat.temp_c):
            full.append(f"{name}: temperature unreadable")
        elif hottest_c is None or heat.temp_c > hottest_c:
            hottest, hottest_c = name, heat.temp_c
        if heat.fan_full:
            full.append(f"{name}: its thermal guard asks for full fan")
    if hottest_c is not None and hottest_c >= cfg.guard.warm_c:
        full.append(f"{hottest} at {hottest_c:.1f} °C, at or above warm_c ({cfg.guard.warm_c:g} °C)")
    return hottest, hottest_c, full


def chassis_duty(
    nodes: Mapping[str, NodeHeat],
    own: ChassisSelf,
    cfg: PolicyConfig,
    state: ChassisState,
    now: float,
) -> tuple[float, tuple[str, ...], ChassisState]:
    """The chassis fan's duty in percent, the reasons for it (for the operator) and the state for next time.

    ``nodes``: the other nodes of the chassis by name (leave out nodes that said goodbye, status "offline";
    a node listed here is expected to report). ``cfg``: the whole ``[policy]`` config, for the fan curve
    (``fan``), the warm level (``guard.warm_c``) and ``chassis.stale_after_s``.
    """
    hottest, hottest_c, full = _survey(nodes, own, cfg, now)
    duty, fan = fan_duty(hottest_c, state.fan, cfg.fan, now, mode=own.mode, force_full=bool(full))
    if full or hottest_c is None:  # own temperature unreadable is itself a reason for full
        reasons = tuple(full)
    else:
        source = "operator's fixed duty" if own.mode != "auto" else "fan curve"
        reasons = (f"hottest: {hottest} at {hottest_c:.1f} °C ({source})",)
    return duty, reasons, ChassisState(fan=fan)
