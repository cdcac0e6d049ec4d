"""The agent's loop: sample -> publish, and commands -> runner -> events. One thread owns the logic.

paho's network thread and the job thread only put items on ``inbox`` or publish; everything that decides runs
here, in ``step()`` (once a tick) and ``dispatch()`` (per queued item). A failure in handling one message is
logged and answered, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from nodeagent import __version__, sd
from nodeagent.chassis_power import PowerBudget
from nodeagent.config import AgentConfig, read_password
from nodeagent.errors import MAX_ECHO, ConfigError, JobRejected, ProtocolError, clip
from nodeagent.ha.bridge import HaBridge
from nodeagent.hw.base import Backend, Sample
from nodeagent.hw.events import HwEvent
from nodeagent.hw.fan import SimFan
from nodeagent.hw.governor import Governor
from nodeagent.hw.hotplug import HotplugMonitor
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.slot_lines import SlotLines, find_chip, pin_factory
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.runner import DuplicateJob, Runner
from nodeagent.link import Credentials, Link, Will
from nodeagent.metrics.config import PrometheusConfig
from nodeagent.metrics.exporter import MetricsExporter
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.launch import accept_launch, launcher_env, leader_of, member_of
from nodeagent.outbox import Outbox
from nodeagent.policy import Admission
from nodeagent.protocol import (
    OFFLINE,
    ONLINE,
    ChassisPower,
    Command,
    Event,
    NodeFacts,
    Telemetry,
    Topics,
    decode,
    encode,
    reply_address,
)
from nodeagent.protocol.messages import fan_mode
from nodeagent.ratelog import RateLog
from nodeagent.safety import (
    Chassis,
    ChassisView,
    NodeSafety,
    SafetyTick,
    drives_chassis_fan,
    open_fans,
    switches_slots,
)
from nodeagent.slot_power import SlotPower
from nodeagent.spool import Spool, SpoolError
from nodeagent.telemetry import alert_fields, pcie_alerts, telemetry_from

log = logging.getLogger("picluster.agent")
bad_input = RateLog(log)  # lines about received messages: anyone who reaches the broker could flood them

Clock = Callable[[], float]
# READY=1 waits this long for the first broker session after the first tick (paho's own connect timeout), then
# comes anyway: the node's safety never depends on the broker.
BROKER_ATTEMPT_S = 5.0
IDENTIFY_S = 30.0  # how long identify lights the LEDs
# What a reload (SIGHUP) applies at once; other changes are logged as needing a restart.
LIVE = ("agent", "jobs", "source", "agent.tick_s", "agent.log_level")


def _changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Names of the fields that differ between two config dataclasses (sections, or the keys of one)."""
    return [prefix + f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


class Agent:
    """One node's agent. Build it, then ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self, cfg: AgentConfig, backend: Backend, *, clock: Clock = time.time, pin_factory: Any = None
    ) -> None:
        self.cfg = cfg
        self.node = cfg.node_id
        self.topics = Topics(cfg.agent.cluster)
        self.backend = backend
        self.clock = clock
        self.inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.sim = backend.name == "sim"
        self.node_facts = backend.facts()
        fans = open_fans(cfg.fan, backend, cfg.hardware.root, cfg.hardware.slot)
        self.safety = NodeSafety(cfg.policy, fans, boost_pct=cfg.jobs.fan_boost_pct)
        chassis_cfg = cfg.policy.chassis
        self.chassis = (
            ChassisView(self.node, chassis_cfg)
            if drives_chassis_fan(chassis_cfg, self.node_facts.board, cfg.hardware.slot)
            else None
        )
        self.governor = Governor(SysfsRoot(cfg.hardware.root)) if backend.name == "real" else None
        self.power = PowerBudget(
            self.node,
            cfg.policy,
            backend,
            driver=self.chassis is not None,
            emit=self.emit,
            marker=Path(cfg.agent.state_dir) / "freq-cap",
        )
        self.slot_power = (
            SlotPower(
                self.node,
                cfg.hardware.slot,
                lambda: self._slot_lines(pin_factory),
                cfg.policy.auto_cycle,
                self.emit,
            )
            if switches_slots(cfg.slot_power, self.node_facts.board, cfg.hardware.slot)
            else None
        )
        self.runner = Runner(
            cfg.jobs,
            cfg.work_dir,
            cores=self.node_facts.cores,
            sim=self.sim,
            emit=self.emit,
            on_start=self._prepare_node,
            on_end=self._restore_node,
            kinds={**KINDS, "hpl": ClusterHplKind(cfg.mpi)},  # hpl on one node, or one role of a cluster run
            job_env=launcher_env(cfg, self.node),
        )
        self._identify_until = 0.0
        self._chassis_reasons: tuple[str, ...] = ()
        self._seq_lock = threading.Lock()
        # Events go to disk before the broker and leave it on PUBACK; seq and the job ids seen live there too.
        self.spool = self._open_spool(cfg)
        self.outbox = Outbox(self.spool, lambda topic, payload: self.link.publish(topic, payload, qos=1))
        self._tick_seq = 0
        self.last_sample: Sample | None = None
        self._degraded_links: frozenset[str] = frozenset()
        self.link = Link(
            cfg.mqtt.client_id or f"picluster-agent-{self.node}",
            cfg.broker,
            credentials=Credentials(
                cfg.mqtt.username,
                read_password(cfg.mqtt, cfg.source),
                cfg.mqtt.ca_file,
                cfg.mqtt.cert_file,
                cfg.mqtt.key_file,
            ),
            will=Will(self.topics.status(self.node), OFFLINE),
            keepalive_s=cfg.mqtt.keepalive_s,
            reconnect_min_s=cfg.mqtt.reconnect_min_s,
            reconnect_max_s=cfg.mqtt.reconnect_max_s,
            on_connect=lambda session_present: self.inbox.put(("connected",)),
            on_message=lambda topic, payload, retained: self.inbox.put(("message", topic, payload, retained)),
            on_publish=self.outbox.acked,
        )
        self.link.subscribe(self.topics.node_cmd(self.node), qos=1)
        self.link.subscribe(self.topics.cluster_cmd(), qos=1)
        self.link.subscribe(self.topics.launch_inbox(self.node), qos=1)  # cluster jobs' leaders (nodeagent/mpi)
        if self.chassis is not None:  # the chassis fan and the power budget follow every node
            self.link.subscribe(self.topics.all_nodes("telemetry"), qos=0)
        if self.chassis is not None or self.slot_power is not None:
            self.link.subscribe(self.topics.all_nodes("status"), qos=1)
        if self.slot_power is not None:  # which node sits in which slot
            self.link.subscribe(self.topics.all_nodes("facts"), qos=1)
        self.link.subscribe(self.topics.all_nodes("power"), qos=1)  # the chassis's frequency cap and budget
        # Home Assistant and Prometheus: where operators already look (nodeagent/ha, nodeagent/metrics).
        self.last_hpl_gflops: float | None = None
        self.ha = HaBridge(
            cfg.homeassistant,
            self.topics,
            self.node,
            self.link,
            deliver=lambda topic, payload: self.handle_message(topic, payload, False),
            busy=lambda: self.runner.current is not None,
            note=lambda message: self.emit("log", message=message),
            drives_chassis=self.chassis is not None,
        )
        prometheus = cfg.prometheus
        if self.sim and prometheus.textfile == PrometheusConfig().textfile:
            # A simulated node is not this machine's hardware: keep it out of the real node_exporter directory.
            prometheus = replace(prometheus, textfile=str(Path(cfg.agent.state_dir) / "picluster.prom"))
            with contextlib.suppress(OSError):
                Path(cfg.agent.state_dir).mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsExporter(prometheus, cfg.agent.cluster)
        self._orphans = self.runner.reap_orphans()
        # udev tells about drives and PCI devices coming and going the moment it happens (real hardware only).
        self.hotplug = (
            HotplugMonitor(lambda event: self.inbox.put(("hotplug", event)))
            if cfg.hardware.hotplug and backend.name == "real"
            else None
        )
        self.notifier = sd.Notifier()

    @staticmethod
    def _open_spool(cfg: AgentConfig) -> Spool:
        """The spool in the state dir; in memory, with an error, when the directory is unusable: the node's
        safety never depends on its disk."""
        limits = {"max_events": cfg.agent.spool_max_events, "max_seen_jobs": cfg.agent.seen_jobs_max}
        try:
            return Spool(cfg.agent.state_dir, **limits)
        except SpoolError as exc:
            log.error("event=spool_unavailable reason=%r action='events are kept in memory only'", str(exc))
            return Spool(None, **limits)

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick every ``agent.tick_s`` and handle queued items in between, until ``stop`` is set."""
        log.info(
            "event=agent_start node=%s cluster=%s backend=%s broker=%s version=%s",
            self.node,
            self.cfg.agent.cluster,
            self.backend.name,
            self.cfg.broker,
            __version__,
        )
        self.check_watchdog()
        if replayed := self.outbox.replay():  # paho holds them until the session is up, then sends them first
            log.info("event=spool_replay events=%d path=%s", replayed, self.spool.path)
        self.link.start()
        if self.hotplug is not None:
            self.hotplug.start()
        started = next_tick = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                tick_s = self.cfg.agent.tick_s  # a reload may change it
                if now >= next_tick:
                    self.safe_step()
                    self.tell_systemd(started)
                    # Skip ticks we were too busy for instead of bursting to catch up.
                    next_tick += tick_s * max(1, int((now - next_tick) // tick_s) + 1)
                    continue
                try:
                    item = self.inbox.get(timeout=min(next_tick - now, 0.5))
                except queue.Empty:
                    continue
                self.dispatch(item)
        finally:
            self.close()

    def close(self) -> None:
        self.notifier.send("STOPPING=1")
        self.runner.shutdown()
        if self.hotplug is not None:
            self.hotplug.stop()
        self.link.stop(goodbye=Will(self.topics.status(self.node), OFFLINE))
        if self.slot_power is not None:
            self.slot_power.close()
        self.power.close()  # a stopped agent enforces no budget, so it leaves no cap behind
        if unsent := len(self.spool):
            log.warning("event=spool_unsent events=%d path=%s action='sent at the next start'", unsent, self.spool.path)
        self.spool.close()
        self.metrics.close()
        self.safety.full()  # a stopped agent leaves the fans at full (the unit's stop hook does it after a crash)
        self.backend.close()
        log.info("event=agent_stop node=%s", self.node)

    def safe_step(self) -> None:
        """``step()``, surviving its own bugs: a failed tick sends the fans to full and the loop goes on."""
        try:
            self.step()
        except Exception:
            log.exception("event=tick_failed action='fans to full; the next tick tries again'")
            self.safety.full()

    def step(self) -> Telemetry:
        """One tick: read the hardware and publish telemetry (retained, so viewers see the latest at once)."""
        now = self.clock()
        sample = self.backend.read(now)
        self.last_sample = sample
        self._tick_seq += 1
        mono = time.monotonic()
        chassis = Chassis(self.chassis.nodes(mono), self.link.connected) if self.chassis is not None else None
        safe = self.safety.tick(sample, mono, chassis)
        if chassis is not None and self.safety.chassis_reasons != self._chassis_reasons:
            self._chassis_reasons = self.safety.chassis_reasons
            log.info(
                "event=chassis_fan duty_pct=%.0f nodes=%d reasons=%r",
                safe.duty_pct,
                len(chassis.nodes),
                "; ".join(self._chassis_reasons),
            )
        self.act_on(safe, sample)
        for fan in self.safety.fans:
            if isinstance(fan, SimFan):
                fan.observe(sample)
        telemetry = replace(
            telemetry_from(self.node, self._tick_seq, sample, self.runner.current),
            fan_duty_pct=safe.duty_pct if self.safety.fans else sample.fan_duty_pct,
            guard=safe.level,
            fan_mode=str(self.safety.mode),
            job_frozen=self.runner.frozen,
            errors=(*sample.errors, *safe.fan_errors),
        )
        telemetry = self.budget_step(telemetry, mono, now)
        pcie_events, self._degraded_links = pcie_alerts(sample.pcie, self._degraded_links)
        for event in (*sample.events, *pcie_events):
            self.hardware_event(event)
        self.link.publish(self.topics.telemetry(self.node), encode(telemetry), qos=0, retain=True)
        self.ha.tick(telemetry, mono, self.last_hpl_gflops)
        self.metrics.tick(telemetry, self.facts_message, self.last_hpl_gflops, mono)
        return telemetry

    def budget_step(self, telemetry: Telemetry, mono: float, wall: float) -> Telemetry:
        """The power budget's tick: the driver decides and publishes, every node applies the cap; slot 1's
        automatic power-cycle."""
        others = self.chassis.readings(mono) if self.chassis is not None else {}
        decision = self.power.decide(telemetry, others, mono, wall)
        if decision is not None:
            self.power.received(decision)
            self.link.publish(self.topics.power(self.node), encode(decision), qos=1, retain=True)
        cap_khz = self.power.apply()
        if self.slot_power is not None:
            self.slot_power.tick(mono)
        return replace(telemetry, freq_cap_mhz=None if cap_khz is None else cap_khz / 1000.0)

    def _slot_lines(self, factory: Any) -> SlotLines:
        """The slot power lines: the given pin factory (tests), gpiozero's mock pins on a simulated node, else
        lgpio on the expander's gpiochip."""
        if factory is None and self.sim:
            from gpiozero.pins.mock import MockFactory

            factory = MockFactory()
        if factory is None:
            factory = pin_factory(find_chip(SysfsRoot(self.cfg.hardware.root), self.cfg.slot_power))
        return SlotLines(self.cfg.slot_power, factory)

    def dispatch(self, item: tuple[Any, ...]) -> None:
        """Handle one queued item; nothing raised here may stop the loop."""
        try:
            if item[0] == "connected":
                self.announce()
            elif item[0] == "hotplug":
                self.hardware_event(item[1])
                self.backend.rescan()
            elif item[0] == "message" and self.ha.owns(item[1]):
                self.ha.handle(item[1], item[2], item[3], time.monotonic())
            elif item[0] == "message":
                self.handle_message(item[1], item[2], item[3])
            elif item[0] == "reload":
                self.reload(item[1])
        except Exception:
            log.exception("event=dispatch_error item=%s", item[0])

    # --- systemd (nodeagent/sd.py; no-ops outside a Type=notify unit) --------------------------------------------
    def tell_systemd(self, started: float) -> None:
        """After a completed tick: READY=1 once the first broker attempt had its chance, WATCHDOG=1, STATUS=."""
        if not self.notifier.enabled:
            return
        now, s, job, connected = time.monotonic(), self.last_sample, self.runner.current, self.link.connected
        temp = f"{s.temp_c:.0f} °C" if s and s.temp_c is not None else "temperature unreadable"
        fan = f", fan {s.fan_duty_pct:.0f} %" if s and s.fan_duty_pct is not None else ""
        broker = f"{'connected to' if connected else 'no session with'} {self.cfg.broker}"
        status = f"{temp}{fan}; {broker}; {f'job {job}' if job else 'idle'}"
        self.notifier.after_tick(now, status, ready=connected or now - started >= BROKER_ATTEMPT_S)

    def check_watchdog(self) -> None:
        """Warn when ticks are too slow for the watchdog (it is pinged from completed ticks only)."""
        every_s = self.notifier.interval_s
        if every_s is not None and self.cfg.agent.tick_s > every_s:
            log.warning(
                "event=tick_slower_than_watchdog tick_s=%g ping_every_s=%g fix='lower agent.tick_s or raise "
                "WatchdogSec'",
                self.cfg.agent.tick_s,
                every_s,
            )

    def reload(self, read: Callable[[], AgentConfig]) -> None:
        """SIGHUP: re-read the config file. The log level, ``agent.tick_s`` and [jobs] apply at once and the MQTT
        session stays up; other changes are logged as needing a restart. A bad file keeps the running config."""
        self.notifier.send("RELOADING=1")
        try:
            new = read()
        except ConfigError as exc:
            log.error("event=reload_failed reason=%r keeping='the running configuration'", str(exc))
            self.notifier.send("READY=1")
            return
        old = self.cfg
        later = [k for k in _changed(old, new) + _changed(old.agent, new.agent, "agent.") if k not in LIVE]
        self.cfg = replace(
            old, agent=replace(old.agent, tick_s=new.agent.tick_s, log_level=new.agent.log_level), jobs=new.jobs
        )
        logging.getLogger().setLevel(self.cfg.agent.log_level.upper())
        kinds = self.runner.capabilities()
        self.runner.cfg, self.runner.work_dir = new.jobs, self.cfg.work_dir
        if self.runner.capabilities() != kinds and self.link.connected:
            self.announce()  # the facts list the job kinds this node accepts
        log.info(
            "event=reloaded source=%s tick_s=%g log_level=%s restart_needed=%s",
            new.source,
            self.cfg.agent.tick_s,
            self.cfg.agent.log_level,
            ",".join(later) or "-",
        )
        self.check_watchdog()
        self.notifier.send("READY=1")

    # --- broker side -----------------------------------------------------------------------------------------
    def announce(self) -> None:
        """After every (re)connect: online and facts, both retained."""
        facts = self.facts_message()
        self.link.publish(self.topics.facts(self.node), encode(facts), qos=1, retain=True)
        self.link.publish(self.topics.status(self.node), ONLINE, qos=1, retain=True)
        self.ha.connected(facts)
        for job in self._orphans:
            self.emit(
                "failed",
                job,
                reason="the agent stopped unexpectedly while this job ran; its processes "
                "were killed when the agent restarted",
            )
        self._orphans = []

    def facts_message(self) -> NodeFacts:
        """What this node is, as the ``facts`` message says it (also Home Assistant's device and Prometheus's
        node_info)."""
        f = self.node_facts
        return NodeFacts(
            node=self.node,
            agent_version=__version__,
            board=f.board,
            model=f.model,
            serial=f.serial,
            cores=f.cores,
            memory_mb=f.memory_mb,
            cpu=f.cpu,
            hostname=f.hostname,
            slot=self.cfg.hardware.slot or f.slot,
            sim=self.sim,
            capabilities=self.runner.capabilities(),
            roles=tuple(
                role
                for role, on in (("chassis", self.chassis is not None), ("slot-power", self.slot_power is not None))
                if on
            ),
            policy=asdict(self.cfg.policy),
            t=self.clock(),
        )

    def handle_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse(topic)
        if parsed is not None and parsed[1] in ("telemetry", "status", "facts", "power"):
            if parsed[1] == "status":
                self.leader_status(parsed[0], payload)
            self.chassis_message(parsed[0], parsed[1], payload, retained)
            return
        if retained:
            # A retained command would replay on every reconnect; commands are one-shot by contract.
            bad_input.warning(
                "retained_command",
                "event=retained_command_ignored topic=%s fix='publish commands without the retain flag'",
                clip(topic, MAX_ECHO),
            )
            return
        try:
            cmd = decode(payload, Command)
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
                self.emit("rejected", job, reason=f"invalid command: {exc.reason}", field=exc.field)
            return
        if topic == self.topics.cluster_cmd() and self.node not in cmd.nodes:
            return
        launch = self.topics.parse_launch(topic)
        if (cmd.cmd == "launch") != (launch is not None) or (launch and launch[1] != cmd.sender):
            # The leader's name in the topic is what a broker ACL vouches for; the payload's is only a claim.
            where = f"on {self.topics.launch_inbox(self.node)[:-1]}<leader>, from the leader named there"
            why = f"a launch request must come {where}" if cmd.cmd == "launch" else f"{cmd.cmd} is not a launch"
            bad_input.warning("bad_message", "event=bad_message topic=%s reason=%r", clip(topic, MAX_ECHO), why)
            self.emit("rejected", cmd.id, reason=why, field="cmd")
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

    def start_job(self, cmd: Command) -> None:
        job = cmd.job
        assert job is not None  # decode() guarantees it for run
        if not self.spool.first_sight(job.id):  # survives restarts, unlike the runner's own check
            self._duplicate(job.id)
            return
        light = any(t.name == job.kind and not t.heavy for t in self.cfg.jobs.template)
        gate = self.safety.admit(self.last_sample, force=job.force, heavy=not light)
        budget = Admission(admitted=True) if light else self.power.admit(force=job.force)
        for answer, what in ((gate, "health"), (budget, "power")):
            if not answer.admitted:
                label = "health gate" if what == "health" else "power budget"
                reason = f"{label}: " + "; ".join(answer.reasons) + " (--force overrides)"
                self.emit("rejected", job.id, reason=reason, field=what)
                return
        overridden = [*gate.reasons, *budget.reasons] if gate.forced or budget.forced else []
        forced = {"forced": True, "forced_reasons": overridden} if overridden else None
        try:
            self.runner.submit(
                job,
                job.params_for(self.node),
                accepted=lambda plan: self.emit("accepted", job.id, data={"plan": plan, **(forced or {})}),
                annotations=forced,
            )
            if leader := member_of(job, self.node):  # a member lets go of its job when the leader's will fires
                self.link.subscribe(self.topics.status(leader), qos=1)
        except DuplicateJob:
            self._duplicate(job.id)
        except JobRejected as exc:
            log.info("event=job_rejected job=%s reason=%r", job.id, exc.reason)
            self.emit("rejected", job.id, reason=exc.reason, field=exc.field)

    def _duplicate(self, job_id: str) -> None:
        """A job id seen before (a redelivery or a repeated submit): answered, never run again."""
        log.info("event=duplicate_job_refused job=%s", job_id)
        self.emit(
            "rejected",
            job_id,
            reason=f"duplicate: job {job_id} was already received by {self.node}; a job id runs at most once",
            field="job.id",
            data={"duplicate": True},
        )

    def leader_status(self, node: str, payload: bytes) -> None:
        """Another node's status: when it leads the cluster job this member holds and went offline, release."""
        job = self.runner.current
        if payload == OFFLINE.encode() and job and leader_of(job, self.runner.work_dir) == node:
            self.runner.cancel(job, reason=f"the job's leader {node} went offline")

    def mpi_launch(self, cmd: Command) -> None:
        """A cluster job's leader asks this member to start Open MPI's daemon (nodeagent/mpi/launch.py)."""
        try:
            argv = accept_launch(cmd, self.runner.current, self.runner.work_dir, self.cfg.mpi, sim=self.sim)
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

    # --- safety (decisions in nodeagent/policy, applied by nodeagent/safety.py) ------------------------------------
    def act_on(self, safe: SafetyTick, sample: Sample) -> None:
        """Carry out the guard's decision on the running job, and report every level change."""
        temp = "unreadable" if sample.temp_c is None else f"{sample.temp_c:.1f} °C"
        job = self.runner.current
        if job and safe.stop_job:
            for running in self.runner.running:  # light jobs too: a critical node runs nothing
                self.runner.cancel(
                    running,
                    reason=f"stopped by the thermal guard: {temp} reached critical "
                    f"({self.cfg.policy.guard.critical_c:g} °C); the node refuses heavy jobs until it "
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
            self._identify(False)

    def chassis_message(self, node: str, leaf: str, payload: bytes, retained: bool) -> None:
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
        cls = {"telemetry": Telemetry, "facts": NodeFacts, "power": ChassisPower}[leaf]
        try:
            msg = decode(payload, cls)
        except ProtocolError as exc:
            bad_input.debug(f"bad_{leaf}", "event=bad_%s node=%s reason=%r", leaf, node, exc.reason)
            return
        if isinstance(msg, ChassisPower):
            self.power.received(msg)
        elif isinstance(msg, NodeFacts):
            if self.slot_power is not None:
                self.slot_power.facts(node, msg.slot)
        elif self.chassis is not None:
            self.chassis.telemetry(node, msg, retained=retained, now=now, wall=self.clock())

    def _prepare_node(self) -> None:
        """Before a job (job thread): full clock and the fan boost; undone by _restore_node however it ends."""
        self.safety.boosting = True
        if self.governor is not None and self.cfg.jobs.governor:
            self.governor.set(self.cfg.jobs.governor)

    def _restore_node(self) -> None:
        self.safety.boosting = False
        if self.governor is not None:
            self.governor.restore()

    def operator_command(self, cmd: Command) -> None:
        """``fan`` and ``identify`` from piclusterctl (or Home Assistant), already validated."""
        if cmd.cmd == "fan":
            self.safety.mode = fan_mode(cmd.value) or "auto"
            self.emit("log", message=f"fan mode set to {cmd.value} by {cmd.sender or 'an operator'}")
        else:
            self._identify(True)

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

    def _identify(self, on: bool) -> None:
        """Light the fan unit's LEDs (where it has them) for IDENTIFY_S; always a log line and an alert."""
        self._identify_until = time.monotonic() + IDENTIFY_S if on else 0.0
        for fan in self.safety.fans:
            if hasattr(fan, "set_led"):
                fan.set_led(*((255, 0, 255) if on else (0, 0, 0)))
        if on:
            log.warning("event=identify node=%s hostname=%s", self.node, self.node_facts.hostname)
            self.emit("alert", message=f"identify: {self.node} ({self.node_facts.hostname})", data={"identify": True})

    def hardware_event(self, event: HwEvent) -> None:
        """A drive lost, a device plugged: logged, and published as an ``alert`` event."""
        log.warning("event=hw_%s device=%s message=%r", event.kind.replace(".", "_"), event.device, event.message)
        self.emit("alert", **alert_fields(event))

    def emit(self, kind: str, job: str = "", **fields: Any) -> None:
        """Spool and publish one event (QoS 1). Thread-safe: the job thread calls it too; the lock keeps the
        wire order the seq order."""
        result = fields.get("result")
        if kind == "finished" and isinstance(result, dict) and isinstance(result.get("gflops"), (int, float)):
            self.last_hpl_gflops = float(result["gflops"])  # a Home Assistant entity and a Prometheus gauge
        t = self.clock()

        def make(seq: int) -> bytes:
            return encode(Event(node=self.node, seq=seq, t=t, kind=kind, job=job, **fields))  # type: ignore[arg-type]

        with self._seq_lock:
            self.outbox.send(self.topics.events(self.node), kind, make)
        log.info(
            "event=job_%s job=%s%s", kind, job or "-", f" reason={fields['reason']!r}" if fields.get("reason") else ""
        )
