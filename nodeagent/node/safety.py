"""Keeps one node safe every tick: the thermal guard and the fan curve decide, this module applies.

The decisions are the pure functions in ``nodeagent.policy``; this class only remembers their state, drives the
node's fans with the result and reports what it did. The broker plays no part: with no controller and no
broker a node still cools itself, freezes a job that runs too hot and stops one that reaches critical.
Failures go to full fan: an unreadable temperature, a fan that refuses a duty, the agent stopping.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodeagent.errors import MAX_REASON, HardwareError, clip
from nodeagent.hw.base import Backend, Sample
from nodeagent.hw.fans.base import Fan, FanConfig
from nodeagent.hw.fans.factory import make_fan
from nodeagent.hw.fans.sim import SimFan
from nodeagent.hw.profiles import NANOCLUSTER_FAN_SLOT, fan_source
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.slot_lines import SlotPowerConfig
from nodeagent.mqtt.ratelog import RateLog
from nodeagent.policy import FanState, GuardState, PolicyConfig, fan_duty, guard
from nodeagent.policy.chassis import ChassisSelf, ChassisState, NodeHeat, chassis_duty
from nodeagent.policy.config import ChassisConfig
from nodeagent.policy.health_gate import Admission, AerIncrease, HealthInput, admit_job
from nodeagent.policy.power_budget import NodeReading
from nodeagent.policy.thermal_guard import GuardEvent
from nodeagent.protocol import Telemetry
from nodeagent.protocol.topics import MAX_NODES

log = logging.getLogger("picluster.safety")
full_log = RateLog(log)
chassis_log = RateLog(log)
# Stands for the nodes a full ChassisView turned away: unknown heat, so the chassis fan runs full while they call.
OVERFLOW = f"(nodes beyond the {MAX_NODES} the chassis view holds)"
MAX_NODE_W = 100.0  # the most one node's power reading may say (plausible_power)

FanMode = str | float  # "auto" or the operator's fixed percent
AER_WINDOW_S = 60.0  # the gate's "rising" is judged on the increases of this last minute


@dataclass(frozen=True)
class Chassis:
    """What the chassis fan's driver knows of the other nodes this tick."""

    nodes: Mapping[str, NodeHeat]
    broker_connected: bool


@dataclass(frozen=True)
class SafetyTick:
    """What safety decided this tick."""

    duty_pct: float
    level: str  # normal | warm | hot | critical
    freeze_job: bool
    stop_job: bool
    refuse_heavy: bool
    events: tuple[GuardEvent, ...]
    fan_errors: tuple[str, ...] = ()


class NodeSafety:
    """The fan curve and thermal guard of one node, applied to ``fans`` (none: decisions are still made)."""

    def __init__(self, policy: PolicyConfig, fans: Sequence[Fan], *, boost_pct: float = 0.0) -> None:
        self.policy = policy
        self.fans = list(fans)
        self.boost_pct = boost_pct
        self.mode: FanMode = "auto"
        self.boosting = False  # a job is running: the fan runs at least at boost_pct
        self.fan_state = FanState()
        self.guard_state = GuardState()
        self.chassis_state = ChassisState()
        self.chassis_reasons: tuple[str, ...] = ()
        self.last: SafetyTick | None = None
        self._aer: list[tuple[float, str, tuple[int, int, int]]] = []  # (when, device, increase) in the window

    def _remember_aer(self, sample: Sample, now: float) -> None:
        """Keep the AER increases of the last ``AER_WINDOW_S``, so the gate judges a rate, not one reading."""
        for p in sample.pcie:
            grew = tuple(max(0, c or 0) for c in (p.increase.correctable, p.increase.nonfatal, p.increase.fatal))
            if any(grew):
                self._aer.append((now, p.bdf, grew))  # type: ignore[arg-type]
        self._aer = [a for a in self._aer if now - a[0] <= AER_WINDOW_S]

    def tick(self, sample: Sample, now: float, chassis: Chassis | None = None) -> SafetyTick:
        """Decide and apply. ``now`` is a steady clock in seconds (``time.monotonic``).

        ``chassis``, on the node that drives a chassis fan: the other nodes' heat and whether this node has the
        broker. The fan then follows the hottest node of the chassis instead of this node alone.
        """
        self._remember_aer(sample, now)
        reasons_before = _gist(self.chassis_reasons)
        temp_c = sample.temp_c
        decision = guard(temp_c, self.guard_state, self.policy.guard, now)
        self.guard_state = decision.state
        if chassis is not None:
            own = ChassisSelf(temp_c, chassis.broker_connected, decision.fan_full, self.mode)  # type: ignore[arg-type]
            duty, self.chassis_reasons, self.chassis_state = chassis_duty(
                chassis.nodes, own, self.policy, self.chassis_state, now
            )
        else:
            duty, self.fan_state = fan_duty(
                temp_c,
                self.fan_state,
                self.policy.fan,
                now,
                mode=self.mode,
                force_full=decision.fan_full,  # type: ignore[arg-type]
            )
        if self.boosting and self.mode == "auto":
            duty = max(duty, self.boost_pct)
        errors = self._drive(duty)
        if errors:
            duty = 100.0  # a fan that refused its duty was sent to full; report what the fans were told
        self.last = SafetyTick(
            duty,
            decision.level,
            decision.freeze_job,
            decision.stop_job,
            decision.refuse_heavy,
            decision.events,
            tuple(errors),
        )
        if chassis is not None and _gist(self.chassis_reasons) != reasons_before:
            # Clipped, and at most 10 a minute: the reasons name every stale node, up to a large fleet's thousands.
            reasons = clip("; ".join(self.chassis_reasons), MAX_REASON)
            chassis_log.info(
                "chassis_fan",
                "event=chassis_fan duty_pct=%.0f nodes=%d reasons=%d %r",
                *(duty, len(chassis.nodes), len(self.chassis_reasons), reasons),
            )
        for fan in self.fans:
            if isinstance(fan, SimFan):
                fan.observe(sample)  # the simulated fan's RPM, for the next read
        return self.last

    def _drive(self, duty: float) -> list[str]:
        errors = []
        for fan in self.fans:
            try:
                if fan.duty_pct != duty:
                    fan.set_duty(duty)
            except (HardwareError, OSError, ValueError) as e:
                errors.append(f"fan: {fan.name}: {e} — fan set to full by the fail-safe")
                fan.full()
        for line in errors:
            log.warning("event=fan_error %s", line)
        return errors

    def admit(self, sample: Sample | None, *, force: bool, heavy: bool = True) -> Admission:
        """The health gate for a job, from the last sample, the recent AER increases and the guard. ``heavy=False``
        leaves out the guard's refusal after a critical spell (the agent judges every job with ``heavy=True``; a
        diagnostic template skips the gate instead: nodeagent/node/commands.py ``JobHooks.admit``)."""
        if sample is None:
            return admit_job(HealthInput(temp_c=None), self.policy.gate, heavy=heavy, force=force)
        totals: dict[str, list[int]] = {}
        for _, device, grew in self._aer:
            acc = totals.setdefault(device, [0, 0, 0])
            for i, n in enumerate(grew):
                acc[i] += n
        health = HealthInput(
            temp_c=sample.temp_c,
            throttled=sample.throttled,
            nvme_critical_warning=functools.reduce(
                operator.or_, (d.smart.critical_warning for d in sample.nvme if d.smart is not None), 0
            ),
            aer=tuple(AerIncrease(dev, *acc, interval_s=AER_WINDOW_S) for dev, acc in totals.items()),
            guard_refuses_heavy=self.last.refuse_heavy if self.last else False,
        )
        return admit_job(health, self.policy.gate, heavy=heavy, force=force)

    def full(self) -> None:
        """Every fan to full: the agent is stopping (the unit's stop hook does the same after a crash)."""
        for fan in self.fans:
            fan.full()


def open_fans(configured: tuple[FanConfig, ...], backend: Backend, root: str, slot: int) -> list[Fan]:
    """The fans this node drives: the simulator's, else the ``[[fan]]`` tables', else the board profile's.

    A fan that cannot be opened is logged with the reason and left out: the node still runs, and
    ``picluster-agent check`` names the fix.
    """
    if backend.name == "sim":
        return [SimFan(backend)]  # type: ignore[arg-type]
    configs, source = fan_source(configured, backend.facts().board, slot)
    fans = []
    for cfg in configs:
        try:
            fan = make_fan(cfg, SysfsRoot(root))
        except (HardwareError, OSError) as e:
            log.warning(
                "event=fan_unavailable backend=%s from=%r error=%r fix='see picluster-agent check'",
                cfg.backend,
                source,
                str(e),
            )
            continue
        if fan is not None:
            log.info("event=fan_ready fan=%s from=%r", fan.name, source)
            fans.append(fan)
    return fans


class ChassisView:
    """The other nodes of the chassis as their telemetry shows them, for the node that drives the chassis fan.

    Heat is stamped with the time it was *received* (this node's steady clock), so clocks that disagree do not
    matter. A node that says it is online before its first telemetry counts as unknown heat (fan full). A node
    that goes offline keeps its last reading, which turns stale and counts as hot, for ``forget_offline_s``;
    then it is forgotten. A retained reading older than that (a node gone long ago) is ignored. The same rules
    keep each node's power report (``readings``) for the chassis power budget.

    At most ``MAX_NODES`` nodes are held; a node beyond them is turned away (counted in ``turned_away``), and the
    fan runs full while any is (``OVERFLOW``: its heat is unknown).
    """

    def __init__(self, own: str, cfg: ChassisConfig, max_nodes: int = MAX_NODES) -> None:
        self.own = own
        self.cfg = cfg
        self.max_nodes = max_nodes
        self.heat: dict[str, NodeHeat] = {}
        self.power: dict[str, NodeReading] = {}
        self._offline_since: dict[str, float] = {}
        self.turned_away = 0
        self._turned_away_t: float | None = None

    def _room(self, node: str, now: float) -> bool:
        if node in self.heat or len(self.heat) < self.max_nodes:
            return True
        self.turned_away += 1
        self._turned_away_t = now
        full_log.warning(
            "chassis_view_full",
            "event=chassis_view_full node=%s nodes=%d fix='more nodes than one cluster may have, or a client "
            "publishing as made-up nodes: check the broker ACL'",
            node,
            len(self.heat),
        )
        return False

    def telemetry(self, node: str, telemetry: Telemetry, *, retained: bool, now: float, wall: float) -> None:
        if node == self.own or not self._room(node, now):
            return
        age = max(0.0, wall - telemetry.t) if retained else 0.0  # a retained reading is as old as it says
        if age > self.cfg.forget_offline_s:
            log.debug("event=chassis_reading_ignored node=%s age_s=%.0f (older than forget_offline_s)", node, age)
            return
        self.heat[node] = NodeHeat(telemetry.temp_c, now - age, fan_full=telemetry.guard != "normal")
        power_w = telemetry.power_w if plausible_power(telemetry.power_w) else None  # else: its estimate counts
        self.power[node] = NodeReading(power_w, telemetry.job is not None, now - age)

    def status(self, node: str, text: str, now: float) -> None:
        if node == self.own:
            return
        if text == "offline":
            if node in self.heat:  # a node never heard from has nothing to forget
                self._offline_since.setdefault(node, now)
            return
        self._offline_since.pop(node, None)
        if not self._room(node, now):
            return
        # A node that is online but has not reported a temperature yet is unknown heat: the fan runs full until
        # its first telemetry (one tick), and if it dies before that it is a silent node like any other.
        self.heat.setdefault(node, NodeHeat(None, now))

    def nodes(self, now: float) -> dict[str, NodeHeat]:
        self._forget(now)
        heat = dict(self.heat)
        if self._turned_away_t is not None and now - self._turned_away_t <= self.cfg.stale_after_s:
            heat[OVERFLOW] = NodeHeat(None, now)  # nodes turned away just now: their heat is unknown
        return heat

    def readings(self, now: float) -> dict[str, NodeReading]:
        """Each other node's last power report, received at ``NodeReading.t``."""
        self._forget(now)
        return dict(self.power)

    def _forget(self, now: float) -> None:
        for node, since in list(self._offline_since.items()):
            if now - since > self.cfg.forget_offline_s:
                self.heat.pop(node, None)
                self.power.pop(node, None)
                del self._offline_since[node]


def plausible_power(power_w: float | None) -> bool:
    """A node's own power reading the chassis sum may use: a number from 0 to MAX_NODE_W. A CM5 draws about 10 W
    flat out and a Pi 5 at most 27 W; a claim of a gigawatt would only make the driver cap the whole chassis."""
    return power_w is not None and 0.0 <= power_w <= MAX_NODE_W


def _gist(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """The reasons without their figures: an age or a temperature ticking on is no news worth a log line."""
    return tuple(re.sub(r"[0-9.]+", "#", r) for r in reasons)


def switches_slots(cfg: SlotPowerConfig, board: str, slot: int) -> bool:
    """Whether this node switches the chassis's slot power: by config, or as a NanoCluster's slot 1."""
    return cfg.enabled == "on" or (cfg.enabled == "auto" and board == "nanocluster" and slot == NANOCLUSTER_FAN_SLOT)


def drives_chassis_fan(cfg: ChassisConfig, board: str, slot: int) -> bool:
    """Whether this node drives the chassis fan: by role, or as a NanoCluster's slot 1."""
    return cfg.role == "on" or (cfg.role == "auto" and board == "nanocluster" and slot == NANOCLUSTER_FAN_SLOT)
