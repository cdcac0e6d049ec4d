"""``piclusterctl top``: every node's temperature, fan, power, frequency, guard, job and progress, live.

It starts from the broker's retained snapshot (status, facts, telemetry: the job's progress is in the telemetry
too, so a viewer that joins mid-job sees it at once) and then follows live telemetry and job events. ``--once``
prints one frame and exits (plain text off a terminal, ``--json`` for scripts). What is drawn is top_view's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console, RenderableType
from rich.live import Live

from controller import report, top_view
from controller.args import UsageError
from controller.fleet import Fleet, subscriptions
from controller.select import expand, natural_key
from controller.session import Received, Session
from nodeagent.errors import ProtocolError
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Event, Topics, decode
from nodeagent.protocol.messages import TERMINAL_EVENTS


@dataclass
class TopState:
    """The fleet plus what live messages add: when each node's telemetry last arrived, and jobs' progress."""

    topics: Topics
    fleet: Fleet = field(init=False)
    arrived: dict[str, float] = field(default_factory=dict)  # monotonic time of the node's last live telemetry
    progress: dict[str, top_view.Progress] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fleet = Fleet(self.topics)

    def apply(self, msg: Received, mono: float) -> None:
        parsed = self.fleet.update(msg)
        if parsed is None:
            return
        node, leaf = parsed
        if leaf == "telemetry" and not msg.retained:
            self.arrived[node] = mono
        elif leaf == "events":
            self._event(node, msg.payload)

    def _event(self, node: str, payload: bytes) -> None:
        try:
            event = decode(payload, Event)
        except ProtocolError:
            return  # a malformed event says nothing about progress
        if event.kind == "progress" and event.job:
            self.progress[node] = top_view.Progress(event.job, event.progress, event.phase)
        elif event.kind in TERMINAL_EVENTS and node in self.progress and self.progress[node].job == event.job:
            del self.progress[node]

    def lines(self, wanted: list[str] | None, now: float, mono: float) -> list[top_view.NodeLine]:
        names = wanted if wanted is not None else sorted(self.fleet.nodes, key=natural_key)
        out = []
        for name in names:
            view = self.fleet.nodes.get(name)
            age = None
            if view is not None and view.telemetry is not None:
                age = mono - self.arrived[name] if name in self.arrived else max(0.0, now - view.telemetry.t)
            out.append(top_view.node_line(name, view, age, self.progress.get(name)))
        return out


def wanted_nodes(pattern: str | None) -> list[str] | None:
    """The node set to show (None: every node seen). Names no node has announced are shown as unknown."""
    if pattern is None or pattern.strip() == "all":
        return None
    return expand(pattern)


def cmd_top(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    if args.json and not args.once:
        raise UsageError("top: --json goes with --once (one frame as JSON)")
    if args.interval <= 0:
        raise UsageError("top: --interval: expected a number of seconds above 0")
    wanted = wanted_nodes(args.nodes)
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with Session(broker, topics.cluster, subscriptions=subs) as session:
        state = TopState(topics)
        for msg in session.snapshot():
            state.apply(msg, time.monotonic())
        if args.once:
            return _once(state, wanted, topics, str(broker), bool(args.json))
        return _follow(session, state, wanted, topics, args.interval)


def _title(topics: Topics, now: float) -> str:
    return f"piclusterctl top · cluster {topics.cluster} · {time.strftime('%H:%M:%S', time.localtime(now))}"


def _once(state: TopState, wanted: list[str] | None, topics: Topics, broker: str, as_json: bool) -> int:
    now = time.time()
    lines = state.lines(wanted, now, time.monotonic())
    if as_json:
        report.print_json(top_view.to_json(lines, {"cluster": topics.cluster, "broker": broker, "t": round(now, 3)}))
        return 0
    if not lines:
        print(f"no nodes have announced themselves in cluster {topics.cluster!r} on {broker}", file=sys.stderr)
        return 0
    console = report.console()
    # On a terminal the frame fits it; in a pipe or a file every node gets its own line.
    height = console.size.height if console.is_terminal else None
    width = console.size.width if console.is_terminal else console.width
    frame, _ = top_view.frame(lines, console=console, width=width, height=height, title=_title(topics, now))
    console.print(frame)
    return 0


def _follow(session: Session, state: TopState, wanted: list[str] | None, topics: Topics, interval_s: float) -> int:
    console = Console(highlight=False)

    def render() -> RenderableType:
        now = time.time()
        lines = state.lines(wanted, now, time.monotonic())
        height = console.size.height if console.is_terminal else None
        frame, _ = top_view.frame(
            lines, console=console, width=console.size.width, height=height, title=_title(topics, now)
        )
        return frame

    try:
        if not console.is_terminal:  # a log: one whole frame per interval, like top -b
            while True:
                console.print(render())
                _pump(session, state, interval_s)
        with Live(render(), console=console, screen=True, auto_refresh=False) as live:
            while True:
                _pump(session, state, interval_s)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return 0


def _pump(session: Session, state: TopState, seconds: float) -> None:
    """Take every message that arrives for ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        msg = session.get(left)
        if msg is not None:
            state.apply(msg, time.monotonic())
