"""``piclusterctl top``'s frame: it fits the console, names every node (folded when they are many), marks the stale
and the offline, and shows the job's progress; rendered by rich into a recording console of a fixed size."""

from __future__ import annotations

import random
import re

import pytest
from ClusterShell.NodeSet import NodeSet
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from controller import top_view
from controller.fleet import NodeView
from controller.session import Received
from controller.top import TopState, wanted_nodes
from nodeagent.protocol import Event, Telemetry, Topics, encode
from nodeagent.protocol.throttle import THROTTLED, now_and_since

JOB = "hpl-20251205-101500-3fa2"
NOW = 10_000.0


def telemetry(name: str, *, temp: float, job: str | None = JOB, throttled: int = 0, guard: str = "normal",
              power: float = 8.0, progress: float | None = 0.42, age: float = 0.5) -> Telemetry:  # fmt: skip
    return Telemetry(
        node=name,
        seq=1,
        t=NOW - age,
        temp_c=temp,
        freq_mhz=1500.0 if throttled else 2400.0,
        fan_duty_pct=100.0 if guard != "normal" else 60.0,
        fan_rpm=4200,
        power_w=power,
        guard=guard,
        throttled=throttled,
        throttle=("throttled", "throttled_occurred") if throttled else (),
        job=job,
        job_progress=progress if job else None,
        job_phase="HPL" if job else "",
        job_frozen=guard == "hot",
    )


def realistic(n: int, seed: int = 7) -> list[top_view.NodeLine]:
    """A fleet mid-HPL: most nodes busy and warm, a few idle, one hot and throttling, two stale, two offline."""
    rnd = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        name = f"node{i}"
        busy = i <= int(n * 0.8)
        temp = round(rnd.uniform(55, 72) if busy else rnd.uniform(38, 45), 1)
        guard, throttled = ("warm" if temp > 68 else "normal"), 0
        if i == 13:
            temp, guard, throttled = 81.5, "hot", now_and_since(THROTTLED)
        age = 25.0 if i in (50, 51) else 0.5
        t = telemetry(name, temp=temp, job=JOB if busy else None, guard=guard, throttled=throttled, age=age)
        view = NodeView(name, "offline" if i % 37 == 0 else "online", None, t)
        lines.append(top_view.node_line(name, view, age))
    return lines


def rows_of(text: str) -> list[tuple[str, str]]:
    """(node set, the rest of the row) of every table row; a node set folded over several lines is joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^NODES? ", line)) + 1
    rows: list[list[str]] = []
    for line in lines[start:]:
        first, _, rest = line.partition(" ")
        if rest.strip():
            rows.append([first, rest])
        elif rows and first:
            rows[-1][0] += first  # the node set's next piece
    return [(names, rest) for names, rest in rows]


def named(text: str) -> set[str]:
    out: set[str] = set()
    for names, _ in rows_of(text):
        out.update(NodeSet(names))
    return out


def render(lines: list[top_view.NodeLine], width: int, height: int | None) -> tuple[str, str]:
    console = Console(record=True, width=width, height=height or 25, color_system=None)
    frame, layout = top_view.frame(lines, console=console, width=width, height=height, title="piclusterctl top")
    console.print(frame)
    return console.export_text(), layout


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40)])
def test_a_hundred_nodes_fit_the_console_every_node_named(width: int, height: int) -> None:
    lines = realistic(100)
    text, layout = render(lines, width, height)
    out = text.rstrip("\n").split("\n")
    assert len(out) <= height and max(len(line) for line in out) <= width, text
    assert layout != "per-node"  # 100 rows do not fit: nodes in one state share a row
    assert named(text) == {f"node{i}" for i in range(1, 101)}, text
    rows = dict(rows_of(text))
    assert "stale" in rows["node50"] and "stale" in rows["node51"]  # stale nodes are marked, each its own row
    assert "offline" in rows["node[37,74]"]
    assert rows_of(text)[0][0] == "node13"  # hottest first
    assert "hot" in rows["node13"] and "thr" in rows["node13"] and "1500" in rows["node13"]
    assert "42%" in text and "100 nodes: 96 online, 2 stale, 2 offline" in text.replace("\n", " ")


def test_few_nodes_get_a_line_each_hottest_first_with_their_progress() -> None:
    lines = realistic(6)
    text, layout = render(lines, 120, 40)
    assert layout == "per-node"
    rows = rows_of(text)
    assert [names for names, _ in rows] == [line.node for line in top_view.hottest_first(lines)]
    assert all("42% HPL" in rest for _, rest in rows[:4])  # the busy ones, with hpcc's phase
    assert JOB in text and "4200rpm" in text


def test_without_a_height_every_node_gets_its_line() -> None:
    text, layout = render(realistic(100), 200, None)
    assert layout == "per-node" and len(rows_of(text)) == 100


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=10_000),
    size=st.sampled_from([(80, 24), (100, 30), (120, 40), (60, 15)]),
)
def test_any_fleet_fits_and_names_every_node(n: int, seed: int, size: tuple[int, int]) -> None:
    rnd = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        name = f"n{i}"
        status = rnd.choice(["online"] * 8 + ["offline", "unknown"])
        job = rnd.choice([None, JOB, "stress-20251205-101500-0001"])
        guard = rnd.choice(list(top_view.GUARD_RANK))
        throttled = rnd.choice([0, 0, 0, now_and_since(THROTTLED)])
        t = telemetry(name, temp=round(rnd.uniform(30, 90), 1), job=job, guard=guard, throttled=throttled)
        view = NodeView(name, status, None, t if rnd.random() > 0.05 else None)
        lines.append(top_view.node_line(name, view, rnd.choice([0.5, 0.5, 30.0])))
    width, height = size
    text, _ = render(lines, width, height)
    out = text.rstrip("\n").split("\n")
    assert len(out) <= height and max(len(line) for line in out) <= width
    assert named(text) == {f"n{i}" for i in range(1, n + 1)}


def test_a_live_progress_event_is_newer_than_the_retained_telemetry_and_an_ending_clears_it() -> None:
    topics = Topics("c")
    state = TopState(topics)
    t = telemetry("a", temp=50.0, progress=0.1)
    state.apply(Received(topics.status("a"), b"online", True), 1.0)
    state.apply(Received(topics.telemetry("a"), encode(t), True), 1.0)
    (line,) = state.lines(None, NOW, 2.0)
    assert (line.progress, line.phase, line.state) == (0.1, "HPL", "online")
    event = Event(node="a", seq=5, t=NOW, kind="progress", job=JOB, progress=0.6, phase="PTRANS")
    state.apply(Received(topics.events("a"), encode(event), False), 2.0)
    state.apply(Received(topics.events("a"), b"\xc1", False), 2.0)  # malformed: ignored
    (line,) = state.lines(None, NOW, 2.0)
    assert (line.progress, line.phase) == (0.6, "PTRANS")
    done = Event(node="a", seq=6, t=NOW, kind="finished", job=JOB, result={})
    state.apply(Received(topics.events("a"), encode(done), False), 2.0)
    (line,) = state.lines(None, NOW, 2.0)
    assert line.progress == 0.1  # back to what the telemetry says until its next tick
    # Live telemetry's age is measured by its arrival, not by the node's clock (which may be off).
    state.apply(Received(topics.telemetry("a"), encode(telemetry("a", temp=50.0, age=3600)), False), 2.0)
    assert state.lines(None, NOW, 4.0)[0].state == "online"
    assert state.lines(None, NOW, 20.0)[0].state == "stale"


def test_a_node_set_filter_shows_nodes_never_seen_as_unknown() -> None:
    state = TopState(Topics("c"))
    assert wanted_nodes(None) is None and wanted_nodes("all") is None
    lines = state.lines(wanted_nodes("node[1-2]"), NOW, 1.0)
    assert [(line.node, line.state) for line in lines] == [("node1", "unknown"), ("node2", "unknown")]
    with pytest.raises(ValueError, match="node set"):
        wanted_nodes("node[1-")


def test_json_has_every_node_and_a_summary() -> None:
    doc = top_view.to_json(realistic(10), {"cluster": "c"})
    assert doc["cluster"] == "c" and len(doc["nodes"]) == 10
    assert doc["summary"]["hottest"] == doc["nodes"][0]["node"] and doc["summary"]["jobs"] == {JOB: 8}
    assert doc["nodes"][0]["job_progress"] == 0.42


def test_short_job_ids_keep_the_kind_and_the_tail() -> None:
    assert top_view.short_job(JOB) == "hpl…3fa2"
    assert top_view.short_job("x") == "x"
