"""The agent's loop: sample -> publish, and commands -> runner -> events. One thread owns the logic.

``build()`` (nodeagent/wiring.py) gives it its parts. paho's network thread and the job thread only put items
on ``inbox`` (bounded: nodeagent/mqtt/inbox.py) or publish; everything that decides runs here, in ``step()``
(once a tick) and ``dispatch()`` (per queued item, handed to ``nodeagent/node/commands.py``). A failure in
handling one message is logged and answered, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from nodeagent import sd
from nodeagent.config import AgentConfig, reloaded
from nodeagent.errors import ConfigError
from nodeagent.ha.bridge import HaBridge
from nodeagent.hw.base import Backend, Sample
from nodeagent.hw.hotplug import HotplugMonitor
from nodeagent.jobs.runner import Runner
from nodeagent.metrics.exporter import MetricsExporter
from nodeagent.mpi.launch_socket import LaunchSocket, jobs_uid, open_launch_socket
from nodeagent.mpi.leaders import Leaders
from nodeagent.mpi.relay import LaunchRelay
from nodeagent.mqtt.inbox import BoundedInbox
from nodeagent.mqtt.link import Link, Will
from nodeagent.mqtt.outbox import Outbox
from nodeagent.mqtt.spool import open_spool
from nodeagent.netaddr import local_addresses
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.node.commands import PEER_LEAVES, Commands
from nodeagent.node.safety import Chassis, ChassisView, NodeSafety
from nodeagent.node.slot_power import SlotPower
from nodeagent.node.spool_watch import SpoolWatch
from nodeagent.node.telemetry import NodeState, facts_from, telemetry_from
from nodeagent.node.trust import configure_gate, node_key
from nodeagent.protocol import OFFLINE, ONLINE, Event, NodeFacts, Telemetry, Topics, encode
from nodeagent.protocol.version import __version__
from nodeagent.security.gate import CommandGate

log = logging.getLogger("picluster.agent")

Clock = Callable[[], float]
# READY=1 waits this long for the first broker session after the first tick (paho's own connect timeout), then
# comes anyway: the node's safety never depends on the broker.
BROKER_ATTEMPT_S = 5.0


class Inbox(Protocol):
    """Where paho's thread, the job threads and signals leave work for the loop: the agent's own queue, or a
    simulated fleet's queue shared by many nodes (``nodeagent/simfleet.py``)."""

    def put(self, item: tuple[Any, ...]) -> None: ...


class Agent:
    """One node's agent: the loop's own state and ``emit``; ``build()`` gives it its parts. Then ``run(stop)``."""

    safety: NodeSafety
    chassis: ChassisView | None
    power: PowerBudget
    slot_power: SlotPower | None
    runner: Runner
    commands: Commands
    link: Link
    ha: HaBridge
    metrics: MetricsExporter
    hotplug: HotplugMonitor | None
    gate: CommandGate
    relay: LaunchRelay
    leaders: Leaders

    def __init__(
        self, cfg: AgentConfig, backend: Backend, *, clock: Clock = time.time, inbox: Inbox | None = None
    ) -> None:
        self.cfg, self.node, self.backend, self.clock = cfg, cfg.node_id, backend, clock
        self.topics = Topics(cfg.agent.cluster)
        self._queue = BoundedInbox(self.is_peer)  # what run() serves (nodeagent/mqtt/inbox.py)
        self.inbox: Inbox = self._queue if inbox is None else inbox
        self.sim = backend.name == "sim"
        self.node_facts = backend.facts()
        self._seq_lock = threading.Lock()
        # Events go to disk before the broker and leave it on PUBACK; seq and the job ids seen live there too.
        self.spool = open_spool(cfg.state_dir, cfg.agent.spool_max_events, cfg.agent.seen_jobs_max)
        self.outbox = Outbox(self.spool, lambda topic, payload: self.link.publish(topic, payload, qos=1))
        self._tick_seq = 0
        self.spool_watch = SpoolWatch(self.spool, cfg.state_dir, self.emit)  # a full disk, said once
        self.orphans: list[str] = []
        self.last_sample: Sample | None = None
        self.last_hpl_gflops: float | None = None  # a Home Assistant entity and a Prometheus gauge
        self.addresses: tuple[str, ...] = ()  # read again at every announce: a lease may have changed them
        self.notifier = sd.Notifier()
        self.node_key = node_key(cfg)  # signs this node's MPI launches; its public half is in the facts
        self.launch_socket: LaunchSocket | None = None

    def is_peer(self, topic: str) -> bool:
        """Another node's telemetry, status, facts or power: in the inbox, each topic's latest message only."""
        parsed = self.topics.parse(topic)
        return parsed is not None and parsed[1] in PEER_LEAVES

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick every ``agent.tick_s`` and handle queued items in between, until ``stop`` is set."""
        self.open()
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
                    item = self._queue.get(timeout=min(next_tick - now, 0.5))
                except queue.Empty:
                    continue
                self.dispatch(item)
        finally:
            self.close()

    def open(self, connect_delay_s: float = 0.0) -> None:
        """Send what a previous process left unsent, connect, watch hotplug: what comes before the first tick."""
        log.info(
            "event=agent_start node=%s cluster=%s backend=%s broker=%s version=%s",
            *(self.node, self.cfg.agent.cluster, self.backend.name, self.cfg.broker, __version__),
        )
        self.notifier.check_tick(self.cfg.agent.tick_s)
        if replayed := self.outbox.replay():  # paho holds them until the session is up, then sends them first
            log.info("event=spool_replay events=%d path=%s", replayed, self.spool.path)
        self.link.start(connect_delay_s)
        if self.hotplug is not None:
            self.hotplug.start()

    def close(self) -> None:
        self.notifier.send("STOPPING=1")
        self.runner.shutdown()
        if self.launch_socket is not None:
            self.launch_socket.close()
        if self.hotplug is not None:
            self.hotplug.stop()
        self.link.stop(goodbye=Will(self.topics.status(self.node), OFFLINE))
        if self.slot_power is not None:
            self.slot_power.close()
        self.power.close()  # a stopped agent enforces no budget, so it leaves no cap behind
        self.spool.close()  # what the broker has not acknowledged stays for the next start
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
        """One tick: read the hardware, keep the node safe, publish telemetry (retained: viewers see the latest)."""
        now, mono = self.clock(), time.monotonic()
        sample = self.last_sample = self.backend.read(now)
        self._tick_seq += 1
        chassis = Chassis(self.chassis.nodes(mono), self.link.connected) if self.chassis is not None else None
        safe = self.safety.tick(sample, mono, chassis)
        self.commands.act_on(safe, sample)
        others = self.chassis.readings(mono) if self.chassis is not None else {}
        cap_khz = self.power.tick(sample, self.runner.current is not None, others, mono, now)
        if self.slot_power is not None:
            self.slot_power.tick(mono)  # slot 1's automatic power-cycle
        self.relay.tick()
        duty, cap_mhz = safe.duty_pct if self.safety.fans else None, None if cap_khz is None else cap_khz / 1000.0
        job = self.runner.current
        progress, phase = self.runner.progress_of(job) if job else (None, "")
        state = NodeState(
            duty, safe.level, str(self.safety.mode), self.runner.frozen, cap_mhz, safe.fan_errors, progress, phase
        )
        telemetry = telemetry_from(self.node, self._tick_seq, sample, job, state)
        self.commands.hardware_events(sample)
        self.link.publish(self.topics.telemetry(self.node), encode(telemetry), qos=0, retain=True)
        self.spool_watch.tick()
        self.ha.tick(telemetry, mono, self.last_hpl_gflops)
        self.metrics.tick(telemetry, self.facts_message, self.last_hpl_gflops, mono)
        return telemetry

    def open_launch_socket(self) -> Path | None:
        """The socket a leader job's MPI launcher asks this agent through, made when this node first leads a
        cluster job ([mpi] launcher = "agent"); its path."""
        self.launch_socket = open_launch_socket(lambda: jobs_uid(self.runner.cfg.user), self.inbox.put)
        return self.launch_socket.path if self.launch_socket is not None else None

    def dispatch(self, item: tuple[Any, ...]) -> None:
        """Handle one queued item; nothing raised here may stop the loop."""
        try:
            if item[0] == "connected":
                self.announce()
            elif item[0] == "hotplug":
                self.commands.hardware_event(item[1])
                self.backend.rescan()
            elif item[0] == "message" and self.ha.owns(item[1]):
                self.ha.handle(item[1], item[2], item[3], time.monotonic())
            elif item[0] == "message" and not self.relay.message(item[1], item[2]):
                self.commands.handle_message(item[1], item[2], item[3])
            elif item[0] == "launch":  # a leader job's launcher, over the launch socket
                self.relay.request(item[1], item[2])
            elif item[0] == "launch_closed":
                self.relay.closed(item[1])
            elif item[0] == "reload":
                self.reload(item[1])
        except Exception:
            log.exception("event=dispatch_error item=%s", item[0])

    # --- systemd (nodeagent/sd.py; no-ops outside a Type=notify unit) --------------------------------------------
    def tell_systemd(self, started: float) -> None:
        """After a completed tick: READY=1 once the first broker attempt had its chance, WATCHDOG=1, STATUS=."""
        if self.notifier.enabled:
            now, s, connected = time.monotonic(), self.last_sample, self.link.connected
            status = sd.status_line(s, str(self.cfg.broker), connected, self.runner.current)
            self.notifier.after_tick(now, status, ready=connected or now - started >= BROKER_ATTEMPT_S)

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
        self.cfg, later = reloaded(self.cfg, new)
        logging.getLogger().setLevel(self.cfg.agent.log_level.upper())
        configure_gate(self.gate, self.cfg)
        if self.runner.reconfigure(new.jobs, self.cfg.work_dir) and self.link.connected:
            self.announce()  # the facts list the job kinds this node accepts
        log.info(
            "event=reloaded source=%s tick_s=%g log_level=%s restart_needed=%s",
            *(new.source, self.cfg.agent.tick_s, self.cfg.agent.log_level, ",".join(later) or "-"),
        )
        self.notifier.check_tick(self.cfg.agent.tick_s)
        self.notifier.send("READY=1")

    # --- broker side -----------------------------------------------------------------------------------------
    def announce(self) -> None:
        """After every (re)connect: online and facts, both retained; jobs a crash left behind, failed."""
        self.addresses = local_addresses()
        facts = self.facts_message()
        self.link.publish(self.topics.facts(self.node), encode(facts), qos=1, retain=True)
        self.link.publish(self.topics.status(self.node), ONLINE, qos=1, retain=True)
        self.ha.connected(facts)
        for job in self.orphans:
            why = (
                "the agent stopped unexpectedly (killed or crashed) before this job ended; whatever of it still ran "
                "was killed when the agent restarted"
            )
            self.emit("failed", job, reason=why)
        self.orphans = []

    def facts_message(self) -> NodeFacts:
        roles = tuple(r for r, on in (("chassis", self.chassis), ("slot-power", self.slot_power)) if on is not None)
        slot, policy, kinds = self.cfg.hardware.slot, asdict(self.cfg.policy), self.runner.capabilities()
        facts = facts_from(
            self.node, self.node_facts, slot, self.sim, kinds, roles, policy, self.clock(), self.addresses
        )
        return replace(facts, key=self.node_key.public.b64) if self.node_key is not None else facts

    def emit(self, kind: str, job: str = "", *, lifecycle: bool = True, **fields: Any) -> None:
        """Spool and publish one event (QoS 1). Thread-safe: the job thread calls it too; the lock keeps the
        wire order the seq order. A job's lifecycle events are also kept for ``resend``."""
        result = fields.get("result")
        if kind == "finished" and isinstance(result, dict) and isinstance(result.get("gflops"), (int, float)):
            self.last_hpl_gflops = float(result["gflops"])
        t = self.clock()

        def make(seq: int) -> bytes:
            return encode(Event(node=self.node, seq=seq, t=t, kind=kind, job=job, **fields))  # type: ignore[arg-type]

        with self._seq_lock:
            self.outbox.send(self.topics.events(self.node), kind, make, job if lifecycle else "")
        reason = f" reason={fields['reason']!r}" if fields.get("reason") else ""
        log.info("event=job_%s job=%s%s", kind, job or "-", reason)
