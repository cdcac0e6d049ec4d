"""The agent's loop: sample -> publish, and commands -> runner -> events. One thread owns the logic.

``build()`` wires one node's parts. paho's network thread and the job thread only put items on ``inbox``
(bounded: nodeagent/mqtt/inbox.py) or publish; everything that decides runs here, in ``step()`` (once a tick) and
``dispatch()`` (per queued item, handed to ``nodeagent/node/commands.py``). A failure in handling one message is
logged and answered, never fatal.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from nodeagent import sd
from nodeagent.config import AgentConfig, mqtt_login, reloaded
from nodeagent.errors import ConfigError
from nodeagent.ha.bridge import HaBridge
from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.hw.base import Backend, Sample
from nodeagent.hw.governor import Governor
from nodeagent.hw.hotplug import HotplugMonitor
from nodeagent.hw.root import SysfsRoot
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.runner import Runner
from nodeagent.metrics.exporter import MetricsExporter
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.control import ControlDir
from nodeagent.mpi.launch import launch_signer
from nodeagent.mpi.launch_socket import LaunchSocket, jobs_uid
from nodeagent.mpi.leaders import Leaders
from nodeagent.mpi.relay import LaunchRelay
from nodeagent.mqtt.inbox import BoundedInbox
from nodeagent.mqtt.link import Link, Will
from nodeagent.mqtt.netloop import NetLoop
from nodeagent.mqtt.outbox import Outbox
from nodeagent.mqtt.spool import open_spool
from nodeagent.netaddr import local_addresses
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.node.commands import PEER_LEAVES, Commands, JobHooks
from nodeagent.node.safety import Chassis, ChassisView, NodeSafety, drives_chassis_fan, open_fans, switches_slots
from nodeagent.node.slot_power import SlotPower, open_slot_lines
from nodeagent.node.telemetry import NodeState, facts_from, telemetry_from
from nodeagent.protocol import OFFLINE, ONLINE, ChassisPower, Event, NodeFacts, Telemetry, Topics, encode
from nodeagent.protocol.version import __version__
from nodeagent.security.gate import CommandGate
from nodeagent.security.keys import KeyFileError, SigningKey, load_or_create
from nodeagent.security.operators import describe, read_operator_keys

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
        self._spool_failing = False
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
        self.spool_health()
        self.ha.tick(telemetry, mono, self.last_hpl_gflops)
        self.metrics.tick(telemetry, self.facts_message, self.last_hpl_gflops, mono)
        return telemetry

    def spool_health(self) -> None:
        """The state dir full or read-only: the spool holds events in memory and retries every tick; the node
        goes on (its safety needs no disk) and says so once, and again when the disk takes them."""
        failing = not self.spool.flush()
        if failing == self._spool_failing:
            return
        self._spool_failing = failing
        where = Path(self.cfg.agent.state_dir)
        if failing:
            free = shutil.disk_usage(where).free if where.is_dir() else 0
            fix = f"free space in {where} (df -h {where}) or point agent.state_dir at a roomier place"
            reason = self.spool.trouble
            log.error("event=state_dir_unwritable path=%s reason=%r free_bytes=%d fix=%r", where, reason, free, fix)
            message = (
                f"cannot write the event spool in {where}: {reason} ({free} bytes free); events are held in memory "
                f"and are lost if the agent stops: {fix}"
            )
            self.emit("alert", message=message, data={"state_dir": str(where), "spool": "memory", "free_bytes": free})
        else:
            log.warning("event=state_dir_writable path=%s", where)
            message = f"the event spool in {where} is written again; the events held in memory are on disk"
            self.emit("alert", message=message, data={"state_dir": str(where), "spool": "disk"})

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

    def open_launch_socket(self) -> Path | None:
        """The socket a leader job's MPI launcher asks this agent through, made when this node first leads a
        cluster job ([mpi] launcher = "agent"); its path."""
        inbox = self.inbox
        try:
            self.launch_socket = LaunchSocket(
                lambda: jobs_uid(self.runner.cfg.user),
                on_request=lambda conn, request: inbox.put(("launch", conn, request)),
                on_closed=lambda conn: inbox.put(("launch_closed", conn)),
            )
        except OSError as exc:
            log.error(
                "event=launch_socket_failed reason=%r effect='this node cannot lead a cluster HPL job'",
                exc.strerror or str(exc),
            )
            return None
        self.launch_socket.start()
        return self.launch_socket.path

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


class JobLoad:
    """Cores the node's jobs keep busy: what heats a simulated node. Bound to the runner once it exists."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def __call__(self) -> float:
        return self.runner.busy_cores(time.monotonic()) if self.runner else 0.0


def build(
    cfg: AgentConfig,
    backend: Backend,
    *,
    clock: Clock = time.time,
    pin_factory: Any = None,
    net: NetLoop | None = None,
    inbox: Inbox | None = None,
) -> Agent:
    """One node's agent, wired: its safety, chassis roles, runner, command handling, MQTT session, Home Assistant
    bridge and Prometheus exporter. ``pin_factory``: gpiozero pins for slot power (tests). ``net`` and ``inbox``:
    a simulated fleet's shared network loop and work queue (``nodeagent/simfleet.py``)."""
    agent = Agent(cfg, backend, clock=clock, inbox=inbox)
    node, topics, facts, emit, hw = agent.node, agent.topics, agent.node_facts, agent.emit, cfg.hardware
    agent.safety = NodeSafety(
        cfg.policy, open_fans(cfg.fan, backend, hw.root, hw.slot), boost_pct=cfg.jobs.fan_boost_pct
    )
    driver = drives_chassis_fan(cfg.policy.chassis, facts.board, hw.slot)
    agent.chassis = ChassisView(node, cfg.policy.chassis) if driver else None

    def publish(decision: ChassisPower) -> None:
        agent.link.publish(topics.power(node), encode(decision), qos=1, retain=True)

    marker = cfg.state_dir / "freq-cap"
    agent.power = PowerBudget(node, cfg.policy, backend, driver=driver, emit=emit, publish=publish, marker=marker)
    lines = partial(open_slot_lines, cfg.slot_power, hw.root, pin_factory, agent.sim)
    slots = switches_slots(cfg.slot_power, facts.board, hw.slot)
    agent.slot_power = SlotPower(node, hw.slot, lines, cfg.policy.auto_cycle, emit) if slots else None
    governor = Governor(SysfsRoot(hw.root)) if backend.name == "real" else None
    hooks = JobHooks(agent.safety, agent.power, governor, lambda: agent.runner.cfg)
    control, agent.leaders = ControlDir(cfg.control_dir), Leaders(opener=lambda: agent.open_launch_socket())
    # hpl on one node, or one role of a cluster run
    hpl = ClusterHplKind(cfg.mpi, control=control, leaders=agent.leaders, signed_only=lambda: agent.cfg.signed_only)
    agent.runner = Runner(
        cfg.jobs, cfg.work_dir, cores=facts.cores, sim=agent.sim, emit=emit, kinds={**KINDS, "hpl": hpl}, hooks=hooks
    )
    agent.link = link = Link(
        cfg.mqtt.client_id or f"picluster-agent-{node}",
        cfg.broker,
        credentials=mqtt_login(cfg),
        will=Will(topics.status(node), OFFLINE),
        keepalive_s=cfg.mqtt.keepalive_s,
        reconnect_min_s=cfg.mqtt.reconnect_min_s,
        reconnect_max_s=cfg.mqtt.reconnect_max_s,
        on_connect=lambda session_present: agent.inbox.put(("connected",)),
        on_message=lambda topic, payload, retained: agent.inbox.put(("message", topic, payload, retained)),
        on_publish=agent.outbox.acked,
        net=net,
    )
    roles = (agent.chassis, agent.slot_power)
    # Who may ask what: operator keys for commands, the job's leader key for a member's launch.
    agent.gate = CommandGate(
        {}, signed_only=True, clock=clock, launch_signer=lambda: launch_signer(agent.runner.current, control)
    )
    configure_gate(agent.gate, cfg)
    agent.commands = Commands(
        cfg,
        facts.hostname,
        agent.runner,
        hooks,
        agent.spool,
        roles,
        emit,
        link.subscribe,
        clock,
        agent.outbox.resend,
        gate=agent.gate,
    )
    agent.relay = LaunchRelay(
        node,
        topics,
        cfg.mpi,
        agent.leaders,
        agent.runner,
        agent.node_key,
        publish=lambda topic, payload: link.publish(topic, payload, qos=1),
        subscribe=link.subscribe,
        unsubscribe=link.unsubscribe,
    )
    for topic, qos in agent.commands.subscriptions():
        link.subscribe(topic, qos)
    # Home Assistant and Prometheus: where operators already look (nodeagent/ha, nodeagent/metrics).
    agent.ha = HaBridge(
        ha_config(cfg),
        topics,
        node,
        link,
        deliver=agent.commands.local_command,
        note=lambda text: emit("log", message=text),
        drives_chassis=driver,
        busy=lambda: agent.runner.current is not None,
    )
    agent.metrics = MetricsExporter(
        cfg.prometheus.for_sim(cfg.state_dir) if agent.sim else cfg.prometheus, cfg.agent.cluster
    )
    # Jobs the previous agent left without a verdict (killed, crashed): their processes, and every job it
    # received and never ended (queued, starting, or finished a moment before it died).
    agent.orphans = list(dict.fromkeys([*agent.spool.unended(), *agent.runner.reap_orphans()]))
    # udev tells about drives and PCI devices coming and going the moment it happens (real hardware only).
    hotplug = hw.hotplug and backend.name == "real"
    agent.hotplug = HotplugMonitor(lambda event: agent.inbox.put(("hotplug", event))) if hotplug else None
    return agent


def node_key(cfg: AgentConfig) -> SigningKey | None:
    """This node's own key (``security.node_key_file``, by default in the state directory), made on the first
    start. Unusable: logged, and the node cannot sign its MPI launches (members that require signatures refuse
    them, saying so); everything else works."""
    path = cfg.node_key_path
    try:
        key, made = load_or_create(path, cfg.node_id)
    except (KeyFileError, OSError) as exc:
        log.error("event=node_key_unusable path=%s reason=%r fix='remove it to make a new one'", path, str(exc))
        return None
    log.info("event=node_key path=%s id=%s made=%s", path, key.public.id, made)
    return key


def configure_gate(gate: CommandGate, cfg: AgentConfig) -> None:
    """[security] into the gate: at start and on every reload (the operator keys are read again)."""
    keys = read_operator_keys(cfg.security.operator_keys_dir)
    for problem in keys.problems:
        log.warning("event=operator_keys_problem reason=%r", problem)
    gate.configure(
        keys.keys,
        signed_only=cfg.signed_only,
        max_skew_s=cfg.security.max_skew_s,
        nonce_max=cfg.security.nonce_cache_max,
    )
    level = logging.WARNING if cfg.signed_only and not keys.keys else logging.INFO
    log.log(level, "event=operator_keys require_signed=%s %s", cfg.signed_only, describe(keys))
    if not cfg.signed_only:  # loudly: whoever can publish on the broker can command this node
        why = "unset on a simulated node" if cfg.security.require_signed is None else "false in the config"
        log.warning(
            "event=unsigned_commands_obeyed reason='security.require_signed is %s' "
            "fix='set security.require_signed = true (docs/security.md)'",
            why,
        )


def ha_config(cfg: AgentConfig) -> HomeAssistantConfig:
    """[homeassistant] as the node obeys it: on a node that requires signed commands, Home Assistant (which cannot
    sign) may set the fan and identify, never restart or reboot the node."""
    ha = cfg.homeassistant
    if cfg.signed_only and (ha.allow_restart or ha.allow_reboot):
        log.warning(
            "event=ha_restart_refused reason='Home Assistant cannot sign, and this node obeys only signed commands' "
            "fix='set security.require_signed = false to let it restart or reboot the node'"
        )
        return replace(ha, allow_restart=False, allow_reboot=False)
    return ha
