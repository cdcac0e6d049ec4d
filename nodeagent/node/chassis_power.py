"""The chassis power budget on one node: the chassis's driver measures and decides, every node applies.

The driver (the node that drives the chassis fan: a NanoCluster's slot 1) adds up the chassis's power every
tick (``policy.power_budget.chassis_power_w``), moves the CPU frequency cap one step at a time
(``cap_frequency``) and publishes the result, retained, on its ``power`` topic. Every node of the cluster
applies the cap to its own ``scaling_max_freq``, and judges a job against the budget before it starts. A driver
that goes silent leaves its last cap in place: a chassis that cannot be measured stays where it was last safe.

Whose decisions count (issue 12, finding 4: any node's login could cap every node by naming another driver in the
body): only the driver's, and only from its own topic (the broker's ACL holds each login to its own topics), with
the same node in the body. The driver is ``policy.power.driver``: a node id, or ``auto``, the one node whose own
retained facts carry the ``chassis`` role. Two nodes claiming it cancel out: no decision counts until one stops
claiming or the operator names the driver, and an alert says so. A node that drives the chassis itself
applies its own decisions only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nodeagent.errors import MAX_ECHO, clip
from nodeagent.hw.base import Backend, Sample
from nodeagent.mqtt.ratelog import RateLog
from nodeagent.policy import (
    Admission,
    NodeReading,
    PolicyConfig,
    PowerState,
    admit_against,
    admit_light,
    cap_frequency,
    chassis_load_w,
    chassis_power_w,
    default_estimate,
)
from nodeagent.protocol import ChassisPower

log = logging.getLogger("picluster.power")
refused_log = RateLog(log)  # decisions from whoever is not the driver: anyone reaching the broker could send them

REPUBLISH_S = 10.0  # the driver republishes an unchanged decision this often, so its age tells it is alive
MAX_CLAIMANTS = 16  # nodes claiming the chassis role remembered (two already mean no driver)
CONFLICT_ALERT_S = 600.0  # at most one alert this often about nodes that all claim to drive the chassis


class PowerBudget:
    """One node's part in the chassis power budget. ``driver``: this node measures and decides."""

    def __init__(
        self,
        node: str,
        policy: PolicyConfig,
        backend: Backend,
        *,
        driver: bool,
        emit: Callable[..., None],
        publish: Callable[[ChassisPower], None] = lambda decision: None,
        marker: Path | None = None,
    ) -> None:
        self.node = node
        self.policy = policy
        self.backend = backend
        self.driver = driver and policy.power.enabled
        self.emit = emit
        self.publish = publish  # the driver's decision, retained on its power topic
        self.ladder = backend.freq_ladder_khz()
        self.state = PowerState()
        self.choice = policy.power.driver  # a node id, or "auto"
        self.decisions: dict[str, ChassisPower] = {}  # the trusted driver's latest decision (at most one entry)
        self.claimants: dict[str, None] = {}  # auto: nodes whose own facts carry the chassis role, oldest first
        self._conflict_alert_t: float | None = None
        self.applied_khz: int | None = None
        self._published: tuple[Any, ...] | None = None
        self._published_t = 0.0
        # A cap is marked on disk while it is in force, so one left behind by a crashed agent is lifted at the
        # next start; a node never capped is never written to (an operator's own scaling_max_freq stays).
        self.marker = marker
        if marker is not None and marker.exists() and self.ladder:
            log.warning("event=freq_cap_lifted reason='left behind by an agent that did not stop cleanly'")
            backend.cap_freq(None)
            marker.unlink(missing_ok=True)

    def tick(self, own: Sample, busy: bool, others: Mapping[str, NodeReading], now: float, wall: float) -> int | None:
        """One tick: the driver decides and publishes, every node applies the cap. Returns the cap in force (kHz),
        None when uncapped."""
        decision = self.decide(own, busy, others, now, wall)
        if decision is not None:
            self.decisions = {self.node: decision}
            self.publish(decision)
        return self.apply()

    # --- the driver ---------------------------------------------------------------------------------------------
    def decide(
        self, own: Sample, busy: bool, others: Mapping[str, NodeReading], now: float, wall: float
    ) -> ChassisPower | None:
        """The driver's decision this tick, when it is due to be published (changed, or ``REPUBLISH_S`` old).
        ``own``: this node's sample (``busy``: it runs a job); ``others``: the other nodes' last reports
        (``ChassisView.readings``)."""
        if not self.driver:
            return None
        cfg = self.policy.power
        readings = {**others, self.node: NodeReading(own.power_w, busy, now)}
        measured, source = chassis_power_w(
            readings, own.input_power_w, cfg, now, stale_after_s=self.policy.chassis.stale_after_s
        )
        busy = tuple(sorted(n for n, r in readings.items() if r.busy))
        cap_khz = 0
        if self.ladder:
            cap, self.state, events = cap_frequency(measured, self.state, cfg, now, self.ladder)
            cap_khz = 0 if self.state.cap_khz is None else cap
            for ev in events:
                log.warning(
                    "event=%s from_mhz=%d to_mhz=%d measured_w=%.1f budget_w=%g",
                    ev.kind,
                    ev.from_khz // 1000,
                    ev.to_khz // 1000,
                    ev.measured_w,
                    ev.budget_w,
                )
                self.emit(
                    "alert",
                    message=f"power budget: chassis at {ev.measured_w:.1f} W against {ev.budget_w:g} W, CPU "
                    f"frequency cap {ev.from_khz // 1000} -> {ev.to_khz // 1000} MHz",
                    data={"power": ev.kind, "from_khz": ev.from_khz, "to_khz": ev.to_khz, "measured_w": ev.measured_w},
                )
        decision = ChassisPower(
            node=self.node,
            t=wall,
            budget_w=cfg.budget_w,
            measured_w=None if measured is None else round(measured, 2),
            source=source,
            estimated_w=round(chassis_load_w(dict.fromkeys(readings, default_estimate(cfg)), busy, cfg), 2),
            cap_khz=cap_khz,
            busy=busy,
            nodes=tuple(sorted(readings)),
            node_idle_w=cfg.node_idle_w,
            node_heavy_w=cfg.node_heavy_w,
            base_w=cfg.base_w,
        )
        key = (decision.cap_khz, decision.busy, decision.nodes, decision.source)
        if key == self._published and now - self._published_t < REPUBLISH_S:
            return None
        self._published, self._published_t = key, now
        return decision

    # --- every node ------------------------------------------------------------------------------------------------
    @property
    def trusted(self) -> str | None:
        """The node whose decisions this node applies: itself when it drives, else ``policy.power.driver``, else
        (auto) the one node claiming the chassis role; None when there is none, or more than one."""
        if self.driver:
            return self.node
        if self.choice != "auto":
            return self.choice
        return next(iter(self.claimants)) if len(self.claimants) == 1 else None

    def received(self, topic_node: str, decision: ChassisPower) -> bool:
        """A decision on ``topic_node``'s power topic; True when it counts (from the driver, naming itself)."""
        if decision.node != topic_node:
            why = f"it names {clip(decision.node, MAX_ECHO)} on {topic_node}'s topic"
        elif topic_node != self.trusted:
            why = f"{topic_node} is not the chassis power driver ({self._driver_words()})"
        else:
            self.decisions = {topic_node: decision}
            return True
        refused_log.warning("power_refused", "event=power_decision_ignored node=%s reason=%r", topic_node, why)
        return False

    def _driver_words(self) -> str:
        if self.driver:
            return "this node drives the chassis power budget itself"
        if self.choice != "auto":
            return f"policy.power.driver = {self.choice!r}"
        if not self.claimants:
            return "policy.power.driver = 'auto' and no node claims the chassis role"
        names = ", ".join(sorted(self.claimants))
        return f"policy.power.driver = 'auto', chassis role claimed by {clip(names, MAX_ECHO)}"

    def facts(self, node: str, roles: tuple[str, ...], now: float) -> None:
        """Another node's own facts (``roles`` empty when they were removed): in auto mode, who claims the chassis
        role. A change of driver drops the old driver's decision; two claimants leave no driver, with an alert."""
        if self.driver or self.choice != "auto" or node == self.node:
            return
        before = self.trusted
        if "chassis" in roles:
            if node not in self.claimants and len(self.claimants) >= MAX_CLAIMANTS:
                self.claimants.pop(next(iter(self.claimants)))
            self.claimants[node] = None
        else:
            self.claimants.pop(node, None)
        after = self.trusted
        if after == before:
            return
        self.decisions = {n: d for n, d in self.decisions.items() if n == after}
        if after is not None:
            log.info("event=power_driver node=%s", after)
        elif len(self.claimants) > 1:
            self._conflict(now)

    def _conflict(self, now: float) -> None:
        names = clip(", ".join(sorted(self.claimants)), MAX_ECHO)
        why = (
            f"more than one node claims to drive the chassis power budget ({names}): none of their decisions "
            "counts; set policy.power.driver to the real driver's node id on every node"
        )
        refused_log.warning("power_driver_conflict", "event=power_driver_conflict claimants=%r", names)
        if self._conflict_alert_t is None or now - self._conflict_alert_t >= CONFLICT_ALERT_S:
            self._conflict_alert_t = now
            self.emit("alert", message=why, data={"power": "driver_conflict"})

    def driver_gone(self, node: str) -> None:
        """A driver's retained decision was removed (decommissioned): its cap no longer applies."""
        self.decisions.pop(node, None)

    def _decision(self) -> ChassisPower | None:
        trusted = self.trusted
        return self.decisions.get(trusted) if trusted is not None else None

    def apply(self) -> int | None:
        """Apply the driver's cap; returns the cap in force (kHz), None when uncapped."""
        decision = self._decision()
        caps = [decision.cap_khz] if decision is not None and decision.cap_khz > 0 else []
        want = _on_ladder(min(caps), self.ladder) if caps and self.ladder else None
        if want != self.applied_khz:
            if want is not None and self.marker is not None:
                self._mark(want)
            problems = self.backend.cap_freq(want)
            log.info("event=freq_cap cap_mhz=%s problems=%r", "none" if want is None else want // 1000, problems)
            self.applied_khz = want
            if want is None and self.marker is not None:
                self.marker.unlink(missing_ok=True)
        return self.applied_khz

    def _mark(self, cap_khz: int) -> None:
        """Note the cap for the next agent (which lifts a cap a crashed one left); the cap applies even when
        the note cannot be written (a full state dir)."""
        assert self.marker is not None
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(f"{cap_khz}\n")
        except OSError as exc:
            log.warning("event=freq_cap_marker_failed path=%s reason=%r", self.marker, exc.strerror or str(exc))

    def admit(self, force: bool, *, heavy: bool = True) -> Admission:
        """May this node start a job, by the driver's budget? A heavy one counts at the heavy estimate (busy nodes
        too); a light one only waits while the chassis measures over its budget."""
        decision = self._decision()
        if decision is None:
            return Admission(admitted=True)
        answer = admit_against(decision, {self.node}) if heavy else admit_light(decision, self.node)
        if answer.admitted:
            return answer
        return Admission(admitted=force, reasons=answer.reasons, forced=force)

    def close(self) -> None:
        if self.applied_khz is not None:
            self.backend.cap_freq(None)
            self.applied_khz = None
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)


def _on_ladder(khz: int, ladder: tuple[int, ...]) -> int:
    """The highest of this node's frequencies at or below ``khz`` (its lowest when none is)."""
    below = [f for f in ladder if f <= khz]
    return max(below) if below else min(ladder)
