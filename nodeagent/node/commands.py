"""Everything a node does about the messages it receives: commands (run, cancel, fan, identify, power, an MPI
launch), the other nodes' retained messages a chassis role follows, and the thermal guard's decisions about the
running job. Runs on the agent's loop thread (the job hooks on the job's thread).

It reports through ``emit(kind, job, **fields)`` (the agent spools and publishes) and subscribes through
``subscribe(topic, qos)``; it never reaches back into the agent. Jobs are admitted by the runner after their
kind has prepared them (``JobHooks.admit``: the health gate and the power budget, judged by the kind's ``heavy``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nodeagent.config import AgentConfig, JobsSection
from nodeagent.errors import MAX_ECHO, JobRejected, ProtocolError, clip
from nodeagent.hw.base import Sample
from nodeagent.hw.events import HwEvent
from nodeagent.hw.governor import Governor
from nodeagent.jobs.runner import DuplicateJob, Runner
from nodeagent.mpi.control import ControlDir
from nodeagent.mpi.launch import accept_launch, leader_of, member_of
from nodeagent.mqtt.ratelog import RateLog
from nodeagent.mqtt.spool import Spool
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.node.safety import ChassisView, NodeSafety, SafetyTick
from nodeagent.node.slot_power import SlotPower
from nodeagent.node.telemetry import alert_fields, pcie_alerts
from nodeagent.protocol import (
    OFFLINE,
    ONLINE,
    ChassisPower,
    Command,
    NodeFacts,
    Telemetry,
    Topics,
    decode,
    encode,
    reply_address,
)
from nodeagent.protocol.envelope import payload_digest
from nodeagent.protocol.messages import fan_mode
from nodeagent.security.gate import CommandGate, Refused

log = logging.getLogger("picluster.agent")
bad_input = RateLog(log)  # lines about received messages: anyone who reaches the broker could flood them
BAD_ANSWERS, BAD_ANSWERS_S = 100, 10.0  # rejections of malformed commands: a burst of 100, then 10 a second
bad_answers = RateLog(log, burst=BAD_ANSWERS, per_s=BAD_ANSWERS_S)

Emit = Callable[..., None]
IDENTIFY_S = 30.0  # how long identify lights the LEDs
PEER_LEAVES = ("telemetry", "status", "facts", "power")  # other nodes' retained messages
MAX_LEADERS = 32  # cluster job leaders whose status a member follows (the oldest is let go past this)
LOCAL_MAY = ("fan", "identify")  # what this node's own Home Assistant bridge may ask (it cannot sign)


class JobHooks:
    """What the node does around a job: admit it (health gate and power budget), prepare the node for a heavy
    one (full clock, fan boost) and restore it afterwards. The runner calls these."""

    def __init__(
        self, safety: NodeSafety, power: PowerBudget, governor: Governor | None, jobs: Callable[[], JobsSection]
    ) -> None:
        self.safety = safety
        self.power = power
        self.governor = governor
        self.jobs = jobs  # the live [jobs] section (a reload replaces it)
        self.last_sample: Sample | None = None  # the latest tick's, which the health gate judges

    def admit(self, heavy: bool, force: bool, diagnostic: bool = False) -> dict[str, Any]:
        """Refuse (JobRejected, field ``health`` or ``power``) or admit; what an admitted job records (``forced``
        and ``forced_reasons`` when ``--force`` overrode something; ``health`` for a diagnostic let past the gate).

        Every job passes the health gate, light ones too, with the thermal guard's refusal after a critical spell.
        A diagnostic template (light by rule) is not held by the gate or the budget: it exists to look at a sick
        node. The power budget counts a heavy job at its heavy estimate, and holds a light one while the chassis
        measures over its budget."""
        gate = self.safety.admit(self.last_sample, force=force or diagnostic, heavy=True)
        if diagnostic:
            return {"health": list(gate.reasons)} if gate.reasons else {}
        budget = self.power.admit(force=force, heavy=heavy)
        answers = [(gate, "health", "health gate"), (budget, "power", "power budget")]
        for answer, field, label in answers:
            if not answer.admitted:
                raise JobRejected(f"{label}: " + "; ".join(answer.reasons) + " (--force overrides)", field)
        if not any(answer.forced for answer, _, _ in answers):
            return {}
        overridden = [reason for answer, _, _ in answers for reason in answer.reasons]
        return {"forced": True, "forced_reasons": overridden} if overridden else {}

    def prepare(self) -> None:
        """Before a heavy job (job thread): full clock and the fan boost; undone by ``restore`` however it ends."""
        self.safety.boosting = True
        governor = self.jobs().governor
        if self.governor is not None and governor:
            self.governor.set(governor)

    def restore(self) -> None:
        self.safety.boosting = False
        if self.governor is not None:
            self.governor.restore()


class Commands:
    """One node's answers to what it receives. ``roles``: this node's chassis roles (the chassis fan's driver,
    the slot power switch), where it has them."""

    def __init__(
        self,
        cfg: AgentConfig,
        hostname: str,
        runner: Runner,
        hooks: JobHooks,
        spool: Spool,
        roles: tuple[ChassisView | None, SlotPower | None],
        emit: Emit,
        subscribe: Callable[[str, int], None],
        clock: Callable[[], float] = time.time,
        say_again: Callable[[str], int] = lambda job: 0,
        *,
        unsubscribe: Callable[[str], None] = lambda topic: None,
        gate: CommandGate | None = None,
    ) -> None:
        self.node, self.topics, self.hostname = cfg.node_id, Topics(cfg.agent.cluster), hostname
        self.mpi, self.critical_c = cfg.mpi, cfg.policy.guard.critical_c  # both need a restart to change
        self.control = ControlDir(cfg.control_dir)  # a member job's leader and launch (nodeagent/mpi/control.py)
        self.runner, self.hooks, self.safety, self.power = runner, hooks, hooks.safety, hooks.power
        self.spool = spool
        self.chassis, self.slot_power = roles
        self.emit, self.subscribe, self.clock = emit, subscribe, clock
        self.say_again = say_again  # publish again what this node said about a job (the outbox); how many events
        self.unsubscribe = unsubscribe
        self._leaders: dict[str, None] = {}  # leaders' status topics followed for member jobs, oldest first
        # Who may ask what (nodeagent/security/gate.py); without one (tests of other parts), unsigned commands pass.
        self.gate = gate or CommandGate({}, signed_only=False, clock=clock)
        self._identify_until = 0.0
        self._degraded_links: frozenset[str] = frozenset()

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic, QoS) of everything this node follows: its commands, and the other nodes its roles watch."""
        driver, slots = self.chassis is not None, self.slot_power is not None
        # Whose power decisions count (node/chassis_power.py): auto learns the driver from the facts.
        choice = self.power.choice
        auto = choice == "auto" and not self.power.driver
        wanted = (
            (self.topics.node_cmd(self.node), 1, True),
            (self.topics.cluster_cmd(), 1, True),
            (self.topics.launch_inbox(self.node), 1, True),  # cluster jobs' leaders (nodeagent/mpi)
            (self.topics.all_nodes("telemetry"), 0, driver),  # the chassis fan and the power budget follow all
            (self.topics.all_nodes("status"), 1, driver or slots),
            (self.topics.all_nodes("facts"), 1, slots or auto),  # which node sits in which slot, who drives
            # Before power: a SUBSCRIBE's retained messages arrive in its order, so the driver is known first.
            (self.topics.all_nodes("power"), 1, choice == "auto"),  # the chassis's frequency cap and budget
            (self.topics.power(choice), 1, choice != "auto"),  # the named driver's only
        )
        return [(topic, qos) for topic, qos, on in wanted if on]

    # --- messages ----------------------------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse(topic)
        if parsed is not None and parsed[1] in PEER_LEAVES:
            if parsed[1] == "status":
                self.leader_status(parsed[0], payload)
            self.peer_message(parsed[0], parsed[1], payload, retained)
            return
        if retained:
            # A retained command would replay on every reconnect; commands are one-shot by contract.
            bad_input.warning(
                "retained_command",
                "event=retained_command_ignored topic=%s fix='publish commands without the retain flag'",
                clip(topic, MAX_ECHO),
            )
            return
        launch = self.topics.parse_launch(topic)
        try:
            admitted = self.gate.admit(topic, payload, launch_sender=launch[1] if launch else None)
        except Refused as exc:
            self.refused(topic, payload, exc)
            return
        except ProtocolError as exc:
            job = reply_address(payload)
            bad_input.warning(
                "bad_message",
                "event=bad_message topic=%s field=%s reason=%r job=%s",
                clip(topic, MAX_ECHO),
                exc.field,
                exc.reason,
                job or "-",
            )
            if job:
                self.answer_bad(job, f"invalid command: {exc.reason}", exc.field)
            return
        cmd = admitted.cmd
        if topic == self.topics.cluster_cmd() and self.node not in cmd.nodes:
            return
        if admitted.ignored:
            bad_input.info("signature_ignored", "event=signature_ignored job=%s reason=%r", cmd.id, admitted.ignored)
        if (cmd.cmd == "launch") != (launch is not None) or (launch and launch[1] != cmd.sender):
            # The leader's name in the topic is what a broker ACL vouches for; the payload's is only a claim.
            where = f"on {self.topics.launch_inbox(self.node)[:-1]}<leader>, from the leader named there"
            why = f"a launch request must come {where}" if cmd.cmd == "launch" else f"{cmd.cmd} is not a launch"
            bad_input.warning("bad_message", "event=bad_message topic=%s reason=%r", clip(topic, MAX_ECHO), why)
            self.answer_bad(cmd.id, why, "cmd")
            return
        if cmd.cmd == "run":
            self.start_job(cmd)
        elif cmd.cmd in ("fan", "identify"):
            self.operator_command(cmd)
        elif cmd.cmd == "power":
            self.power_command(cmd)
        elif cmd.cmd == "launch":
            self.mpi_launch(cmd)
        elif cmd.cmd == "cancel" and not self.runner.cancel(cmd.job_id):
            self.emit("log", cmd.job_id, message=f"cancel: job {cmd.job_id} is not running on {self.node}")
        elif cmd.cmd == "resend":
            self.resend(cmd.job_id)

    def answer_bad(self, job: str, reason: str, field: str) -> None:
        """Answer a malformed command (its sender waits for a word), at most BAD_ANSWERS per BAD_ANSWERS_S: each
        answer is an event on disk and on the broker, and a flood must not turn into one. Such an answer is not
        kept for ``resend``: the id is the sender's to choose, and no job of it was received."""
        if bad_answers.allow("rejected"):
            self.emit("rejected", job, reason=reason, field=field, lifecycle=False)
        else:
            bad_input.warning(
                "answer_suppressed",
                "event=answer_suppressed job=%s reason='over %d answers to malformed commands in %g s'",
                job,
                BAD_ANSWERS,
                BAD_ANSWERS_S,
            )

    def refused(self, topic: str, payload: bytes, exc: Refused) -> None:
        """A command the gate refused: logged and answered (``rejected``, ``data.auth`` the code) at a bounded
        rate, since anyone who reaches the broker can send them; not at all when it was meant for other nodes."""
        if topic == self.topics.cluster_cmd() and self.node not in exc.nodes:
            return
        logged = bad_input.warning(
            "command_refused",
            "event=command_refused code=%s key=%s topic=%s job=%s reason=%r",
            *(exc.code, exc.key or "-", clip(topic, MAX_ECHO), exc.reply or "-", exc.reason),
        )
        if logged and exc.reply:
            data = {"auth": exc.code, "digest": payload_digest(topic, payload)}
            # Not this node's word on the job (a forged copy may carry its id): followers match the digest.
            self.emit("rejected", exc.reply, reason=exc.reason, field="signature", data=data, lifecycle=False)

    def local_command(self, cmd: Command) -> None:
        """A command from this node's own Home Assistant bridge, which cannot sign: only fan and identify, with the
        wire's validation. Whoever may publish on the node's HA topics may ask these (the broker's ACL lets only
        Home Assistant's login), and nothing else ever comes this way."""
        if cmd.cmd not in LOCAL_MAY:
            why = f"{cmd.cmd} may not come from Home Assistant (only {' and '.join(LOCAL_MAY)})"
            bad_input.warning("local_refused", "event=command_refused code=not_allowed source=ha reason=%r", why)
            self.emit("rejected", cmd.id, reason=why, field="cmd")
            return
        try:
            checked = decode(encode(cmd), Command)
        except ProtocolError as exc:
            self.emit("rejected", cmd.id, reason=f"invalid command: {exc.reason}", field=exc.field)
            return
        self.operator_command(checked)

    # --- jobs ----------------------------------------------------------------------------------------------------
    def start_job(self, cmd: Command) -> None:
        job = cmd.job
        assert job is not None  # decode() guarantees it for run
        if not self.spool.first_sight(job.id):  # survives restarts, unlike the runner's own check
            self._duplicate(job.id)
            return
        try:
            self.runner.submit(
                job, job.params_for(self.node), accepted=lambda data: self.emit("accepted", job.id, data=data)
            )
            if leader := member_of(job, self.node):  # a member lets go of its job when the leader's will fires
                self.follow_leader(leader)
        except DuplicateJob:
            self._duplicate(job.id)
        except JobRejected as exc:
            log.info("event=job_rejected job=%s reason=%r", job.id, exc.reason)
            self.emit("rejected", job.id, reason=exc.reason, field=exc.field)

    def follow_leader(self, leader: str) -> None:
        """Follow a member job's leader's status (unless every node's is followed anyway); at most MAX_LEADERS:
        leader names come from job requests, so the oldest is let go rather than growing the list forever."""
        if self.chassis is not None or self.slot_power is not None:
            return  # already subscribed to every node's status
        topic = self.topics.status(leader)
        self._leaders.pop(topic, None)
        self._leaders[topic] = None
        self.subscribe(topic, 1)
        while len(self._leaders) > MAX_LEADERS:
            oldest = next(iter(self._leaders))
            del self._leaders[oldest]
            self.unsubscribe(oldest)

    def resend(self, job_id: str) -> None:
        """piclusterctl lost what this node said about a job (a broker crash loses what it acknowledged since its
        last save): say it again, same ``seq``. A job this node never received is refused for good, so the
        command that was lost cannot run late."""
        if sent := self.say_again(job_id):
            log.info("event=job_resent job=%s events=%d", job_id, sent)
            # The last word: piclusterctl knows it has everything this node said (they arrive in order).
            self.emit("log", job_id, message=f"resent {sent} event(s) about job {job_id}", data={"resent": sent})
        elif self.spool.first_sight(job_id):
            self.emit(
                "rejected",
                job_id,
                reason=f"job {job_id} never reached {self.node} (its command was lost, e.g. with a broker restart); "
                "it will not run here: submit it again",
                field="job.id",
            )

    def _duplicate(self, job_id: str) -> None:
        """A job id seen before (a redelivery or a repeated submit): answered, never run again."""
        log.info("event=duplicate_job_refused job=%s", job_id)
        self.emit(
            "rejected",
            job_id,
            reason=f"duplicate: job {job_id} was already received by {self.node}; a job id runs at most once",
            field="job.id",
            data={"duplicate": True},
            lifecycle=False,  # an answer to a copy, not this node's word on the job
        )

    def leader_status(self, node: str, payload: bytes) -> None:
        """Another node's status: when it leads the cluster job this member holds and went offline, release."""
        job = self.runner.current
        if payload == OFFLINE.encode() and job and leader_of(job, self.control) == node:
            self.runner.cancel(job, reason=f"the job's leader {node} went offline")

    def mpi_launch(self, cmd: Command) -> None:
        """A cluster job's leader asks this member to start Open MPI's daemon (nodeagent/mpi/launch.py)."""
        try:
            argv = accept_launch(cmd, self.runner.current, self.control, self.mpi, sim=self.runner.sim)
        except JobRejected as exc:
            bad_input.warning(
                "mpi_launch_refused",
                "event=mpi_launch_refused job=%s from=%s reason=%r",
                cmd.job_id,
                cmd.sender,
                exc.reason,
            )
            self.emit("rejected", cmd.id, reason=exc.reason, field=exc.field)
            return
        self.emit("accepted", cmd.id, data={"job": cmd.job_id, "daemon": argv[0]})

    # --- safety (decisions in nodeagent/policy, applied by nodeagent/node/safety.py) --------------------------------
    def act_on(self, safe: SafetyTick, sample: Sample) -> None:
        """Carry out the guard's decision on the running job, and report every level change."""
        self.hooks.last_sample = sample
        temp = "unreadable" if sample.temp_c is None else f"{sample.temp_c:.1f} °C"
        job = self.runner.current
        if job and safe.stop_job:
            for running in self.runner.running:  # light jobs too: a critical node runs nothing
                self.runner.cancel(
                    running,
                    reason=f"stopped by the thermal guard: {temp} reached critical "
                    f"({self.critical_c:g} °C); the node refuses heavy jobs until it "
                    "has cooled or an operator clears it",
                )
        elif job and safe.freeze_job and self.runner.freeze():
            log.warning("event=job_frozen job=%s temp=%s", job, temp)
        elif not safe.freeze_job and self.runner.thaw():
            log.info("event=job_resumed job=%s temp=%s", job, temp)
        for ev in safe.events:
            log.warning("event=guard_%s from=%s to=%s temp_c=%s", ev.kind, ev.from_level, ev.to_level, ev.temp_c)
            self.emit(
                "alert",
                message=f"thermal guard {ev.kind}: {ev.from_level} -> {ev.to_level} at {temp}",
                data={
                    "guard": ev.kind,
                    "from": ev.from_level,
                    "to": ev.to_level,
                    "temp_c": ev.temp_c,
                    "threshold_c": ev.threshold_c,
                },
            )
        if self._identify_until and time.monotonic() > self._identify_until:
            self.identify(False)

    def peer_message(self, node: str, leaf: str, payload: bytes, retained: bool) -> None:
        """Another node's telemetry, status or facts (for the chassis's driver and slot power), or a driver's
        power decision (for every node)."""
        now = time.monotonic()
        if leaf == "status":
            text = payload.decode(errors="replace")
            if self.chassis is not None:
                self.chassis.status(node, text, now)
            if self.slot_power is not None:
                self.slot_power.status(node, text == ONLINE)
                if not payload:  # forgotten: an empty retained status
                    self.slot_power.forget(node)
            return
        if leaf == "power" and not payload:
            self.power.driver_gone(node)
            return
        if leaf == "facts" and not payload:  # forgotten
            self.power.facts(node, (), now)
            return
        cls = {"telemetry": Telemetry, "facts": NodeFacts, "power": ChassisPower}[leaf]
        try:
            msg = decode(payload, cls)
        except ProtocolError as exc:
            bad_input.debug(f"bad_{leaf}", "event=bad_%s node=%s reason=%r", leaf, node, exc.reason)
            return
        if isinstance(msg, ChassisPower):
            self.power.received(node, msg)
        elif isinstance(msg, NodeFacts):
            if msg.node != node:  # only a node's own word on its own topic counts (the ACL vouches for the topic)
                bad_input.debug("bad_facts", "event=bad_facts node=%s reason='names another node'", node)
                return
            self.power.facts(node, msg.roles, now)
            if self.slot_power is not None:
                self.slot_power.facts(node, msg.slot)
        elif self.chassis is not None:
            self.chassis.telemetry(node, msg, retained=retained, now=now, wall=self.clock())

    # --- operator commands -----------------------------------------------------------------------------------------
    def operator_command(self, cmd: Command) -> None:
        """``fan`` and ``identify`` from piclusterctl (or Home Assistant), already validated."""
        if cmd.cmd == "fan":
            self.safety.mode = fan_mode(cmd.value) or "auto"
            self.emit("log", message=f"fan mode set to {cmd.value} by {cmd.sender or 'an operator'}")
        else:
            self.identify(True)

    def power_command(self, cmd: Command) -> None:
        """``power`` from piclusterctl: only the node that switches the chassis's slots acts on it."""
        if self.slot_power is None:
            self.emit(
                "rejected",
                cmd.id,
                reason=f"power: {self.node} does not switch slot power (a NanoCluster's slot 1 does; "
                '[slot_power] enabled = "on" gives a node the role)',
                field="cmd",
            )
            return
        self.slot_power.command(cmd)

    def identify(self, on: bool) -> None:
        """Light the fan unit's LEDs (where it has them) for IDENTIFY_S; always a log line and an alert."""
        self._identify_until = time.monotonic() + IDENTIFY_S if on else 0.0
        for fan in self.safety.fans:
            if hasattr(fan, "set_led"):
                fan.set_led(*((255, 0, 255) if on else (0, 0, 0)))
        if on:
            log.warning("event=identify node=%s hostname=%s", self.node, self.hostname)
            self.emit("alert", message=f"identify: {self.node} ({self.hostname})", data={"identify": True})

    def hardware_events(self, sample: Sample) -> None:
        """This tick's hardware events: the sample's own, and PCIe links that degraded, recovered or see AER rising
        (reported when that changes, not every tick)."""
        pcie_events, self._degraded_links = pcie_alerts(sample.pcie, self._degraded_links)
        for event in (*sample.events, *pcie_events):
            self.hardware_event(event)

    def hardware_event(self, event: HwEvent) -> None:
        """A drive lost, a device plugged: logged, and published as an ``alert`` event."""
        log.warning("event=hw_%s device=%s message=%r", event.kind.replace(".", "_"), event.device, event.message)
        self.emit("alert", **alert_fields(event))
