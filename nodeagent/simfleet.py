"""``picluster-agent sim-fleet``: many simulated nodes in one process. For tests and benchmarks only.

Every node is the real agent, built by ``wiring.build()``: its own configuration, state directory (its spool,
job ids seen and job directories), runner, command handling, and MQTT session with its own client id, will and
retained status, facts and telemetry. It decodes, admits, runs and reports jobs exactly as ``picluster-agent run
--sim`` does. Only the threads are shared, so a 2-core machine holds a thousand nodes:

- one ``NetLoop`` thread (``mqtt/netloop.py``) drives every node's MQTT session, instead of a paho thread each;
- a few logic threads ("shards", ``--threads``) each own a slice of the nodes. A shard ticks each of its nodes
  at that node's own time (the fleet's first ticks are spread evenly over one ``agent.tick_s``) and hands each
  node the messages it received, one at a time: no node's logic ever runs on two threads at once, which is the
  single-agent rule too;
- a job is what it is on a real node: its own thread and process.

A shard serves queued messages before due ticks, so a burst of commands is not kept waiting behind telemetry.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import shlex
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from nodeagent.agent import Agent
from nodeagent.config import BUILTIN_KINDS, AgentConfig
from nodeagent.errors import ConfigError
from nodeagent.hw import make_backend
from nodeagent.jobs.runner import JobLoad
from nodeagent.jobs.template_config import JobTemplate, validate_templates
from nodeagent.mqtt.netloop import NetLoop
from nodeagent.protocol.topics import NAME_RE
from nodeagent.protocol.typecheck import FieldError
from nodeagent.state import SIM_SUBDIR, StateLock, state_root
from nodeagent.wiring import build

log = logging.getLogger("picluster.simfleet")

# Built-in defaults of a fleet node; the config file (--config) wins over them. Home Assistant discovery and the
# Prometheus textfile would add a thousand devices to an HA and a thousand files to a disk for no test's sake,
# and a systemd scope per job would measure systemd-run rather than the agent.
FLEET_DEFAULTS: dict[str, dict[str, Any]] = {
    "agent": {"log_level": "warning"},
    "hardware": {"backend": "sim"},
    "homeassistant": {"enabled": False},
    "prometheus": {"textfile": ""},
    "jobs": {"systemd_scope": "off"},
}
DEFAULT_TEMPLATE = "noop=true"  # a light job: one short process per node (the CLI repeats it for --help)
BATCH = 64  # queued messages a shard serves before it looks at the ticks again
CLOSE_THREADS = 16  # nodes saying goodbye at once when the fleet stops


def template_from(spec: str) -> JobTemplate:
    """``NAME=COMMAND`` (split like a shell would, run without one): a light template, 60 s at most."""
    name, sep, command = spec.partition("=")
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ConfigError(f"--template {spec!r}: {exc}") from None
    if not sep or not name or not argv:
        raise ConfigError(f"--template {spec!r}: expected NAME=COMMAND, e.g. noop=true or nap='sleep 0.1'")
    return JobTemplate(name=name, argv=argv, timeout_s=60.0, heavy=False, help="sim-fleet --template")


def node_names(prefix: str, count: int, first: int = 1) -> list[str]:
    """``sim1``, ``sim2``, ... checked against the protocol's node-name rule."""
    if count < 1:
        raise ConfigError(f"--count: expected at least 1 node, got {count}")
    names = [f"{prefix}{i}" for i in range(first, first + count)]
    bad = [n for n in (names[0], names[-1]) if not NAME_RE.match(n)]
    if bad:
        raise ConfigError(f"--prefix {prefix!r}: {bad[0]!r} is not a node name (letters, digits, '-', '_')")
    return names


def fleet_config(base: AgentConfig, templates: Sequence[JobTemplate]) -> AgentConfig:
    """The base every node shares: the config's own templates plus ``templates`` (one name each)."""
    merged = (*base.jobs.template, *(t for t in templates if t not in base.jobs.template))
    try:
        validate_templates(merged, reserved=BUILTIN_KINDS, path="--template")
    except FieldError as exc:
        raise ConfigError(str(exc)) from None
    return replace(base, jobs=replace(base.jobs, template=merged))


def fleet_root(base: AgentConfig) -> Path:
    """Where the fleet's nodes keep their state: ``agent.state_dir`` (``--state-dir``), else the agent's default
    root (``$STATE_DIRECTORY``, else /var/lib/picluster)."""
    return Path(base.agent.state_dir) if base.agent.state_dir else state_root()


def node_config(base: AgentConfig, node: str, root: Path) -> AgentConfig:
    """One node's config: its name, its own state directory (``<root>/sim/<node>``, where a lone ``run --sim`` of
    that node would keep it by default) and job directory, and the default client id (``picluster-agent-<node>``),
    whatever the shared config says about those three."""
    return replace(
        base,
        agent=replace(base.agent, node_id=node, state_dir=str(root / SIM_SUBDIR / node)),
        mqtt=replace(base.mqtt, client_id=""),
        jobs=replace(base.jobs, work_dir=""),
    )


class _Tagged:
    """One node's inbox: its items go to its shard's queue, tagged with the node."""

    def __init__(self, shard: _Shard) -> None:
        self.shard = shard
        self.agent: Agent | None = None

    def put(self, item: tuple[Any, ...]) -> None:
        self.shard.queue.put((self.agent, item))


class _Shard:
    """A logic thread for a slice of the fleet: ticks and messages, one node at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: queue.SimpleQueue[tuple[Agent, tuple[Any, ...]]] = queue.SimpleQueue()
        self.agents: list[Agent] = []
        self.offsets: list[float] = []  # each node's first tick after the start, in seconds
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, agent: Agent, offset_s: float) -> None:
        self.agents.append(agent)
        self.offsets.append(offset_s)

    def start(self, t0: float) -> None:
        self.thread = threading.Thread(target=self._run, args=(t0,), name=self.name, daemon=True)
        self.thread.start()

    def _run(self, t0: float) -> None:
        ticks = [(t0 + offset, i) for i, offset in enumerate(self.offsets)]
        heapq.heapify(ticks)
        while not self.stop.is_set():
            for _ in range(BATCH):
                try:
                    agent, item = self.queue.get_nowait()
                except queue.Empty:
                    break
                agent.dispatch(item)
            now = time.monotonic()
            if ticks and ticks[0][0] <= now:
                when, i = heapq.heappop(ticks)
                agent = self.agents[i]
                agent.safe_step()
                tick_s = agent.cfg.agent.tick_s
                # Skip ticks the shard was too busy for instead of bursting to catch up (as Agent.run does).
                heapq.heappush(ticks, (when + tick_s * max(1, int((now - when) // tick_s) + 1), i))
                continue
            try:
                agent, item = self.queue.get(timeout=min(ticks[0][0] - now, 0.5) if ticks else 0.5)
            except queue.Empty:
                continue
            agent.dispatch(item)


class SimFleet:
    """``names`` simulated nodes sharing one network loop and ``threads`` logic threads. ``start``, then
    ``close`` (every node says goodbye: retained offline, as a stopped agent does)."""

    def __init__(self, base: AgentConfig, names: Sequence[str], root: Path, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"--threads: expected at least 1, got {threads}")
        self.names = list(names)
        self.net = NetLoop("sim-fleet-net")
        self.shards = [_Shard(f"sim-fleet-{i}") for i in range(min(threads, len(self.names)))]
        self.agents: list[Agent] = []
        self.locks: list[StateLock] = []  # each node holds its own state directory, as a lone agent does
        tick_s = base.agent.tick_s
        for k, node in enumerate(self.names):
            cfg = node_config(base, node, root)
            try:
                self.locks.append(StateLock.acquire(cfg.state_dir, node))  # StateDirBusy names the holder
            except BaseException:
                self.release()
                raise
            job_load = JobLoad()
            backend = make_backend("sim", root=cfg.hardware.root, node_id=node, sim=cfg.sim, load_fn=job_load)
            shard = self.shards[k % len(self.shards)]
            inbox = _Tagged(shard)
            agent = build(cfg, backend, net=self.net, inbox=inbox)
            inbox.agent, job_load.runner = agent, agent.runner
            shard.add(agent, tick_s * k / len(self.names))  # the first ticks spread over one tick
            self.agents.append(agent)

    def start(self) -> None:
        self.net.start()
        for agent in self.agents:
            agent.open()
        t0 = time.monotonic()
        for shard in self.shards:
            shard.start(t0)

    @property
    def connected(self) -> int:
        return sum(agent.link.connected for agent in self.agents)

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.connected < len(self.agents):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        for shard in self.shards:
            shard.stop.set()
        for shard in self.shards:
            if shard.thread is not None:
                shard.thread.join(5.0)
        with ThreadPoolExecutor(CLOSE_THREADS, thread_name_prefix="sim-fleet-close") as pool:
            for failure in pool.map(_close, self.agents):
                if failure:
                    log.error("event=fleet_close_failed %s", failure)
        self.net.stop()
        self.release()

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []


def _close(agent: Agent) -> str:
    try:
        agent.close()
    except Exception as exc:  # one node's failure to stop must not keep the others connected
        return f"node={agent.node} reason={exc!r}"
    return ""


def run_fleet(base: AgentConfig, names: Sequence[str], root: Path, stop: threading.Event, *, threads: int) -> int:
    """Start the fleet, say when every node is connected, run until ``stop``, then stop every node."""
    started = time.monotonic()
    fleet = SimFleet(base, names, root, threads=threads)
    built = time.monotonic()
    fleet.start()
    try:
        while not stop.is_set() and not fleet.wait_connected(1.0):
            pass
        if not stop.is_set():
            log.warning(
                "event=fleet_ready nodes=%d first=%s last=%s build_s=%.2f connect_s=%.2f threads=%d rss_mb=%.0f "
                "state=%s broker=%s",
                *(len(names), names[0], names[-1], built - started, time.monotonic() - built),
                *(threading.active_count(), _rss_mb(), root / "sim", base.broker),
            )
        stop.wait()
    finally:
        fleet.close()
    return 0


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
