"""One node's agent, wired: ``build()`` gives an ``Agent`` (nodeagent/agent.py) its parts, each from its own room
(node/, jobs/, mpi/, mqtt/, ha/, metrics/) and the configuration. Nothing here runs; ``Agent.run`` does.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from nodeagent.agent import Agent, Clock, Inbox
from nodeagent.config import AgentConfig, mqtt_login
from nodeagent.ha.bridge import HaBridge
from nodeagent.hw.base import Backend
from nodeagent.hw.governor import Governor
from nodeagent.hw.hotplug import HotplugMonitor
from nodeagent.hw.root import SysfsRoot
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.runner import Runner
from nodeagent.metrics.exporter import MetricsExporter
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.control import ControlDir
from nodeagent.mpi.launch import launch_signer
from nodeagent.mpi.leaders import Leaders
from nodeagent.mpi.relay import LaunchRelay
from nodeagent.mqtt.link import Link, Will
from nodeagent.mqtt.netloop import NetLoop
from nodeagent.node.chassis_power import PowerBudget
from nodeagent.node.commands import Commands, JobHooks
from nodeagent.node.safety import ChassisView, NodeSafety, drives_chassis_fan, open_fans, switches_slots
from nodeagent.node.slot_power import SlotPower, open_slot_lines
from nodeagent.node.trust import configure_gate, ha_config
from nodeagent.protocol import OFFLINE, ChassisPower, encode
from nodeagent.security.gate import CommandGate


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
