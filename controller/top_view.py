"""What ``piclusterctl top`` shows, from the fleet's telemetry (pure: no session, no clock read).

One line per node while the nodes fit the screen, hottest first. When they do not, nodes in the same state are
folded into one row (a ClusterShell node set) with the range of their figures; the state is taken coarser and
coarser until the rows fit, so every node stays named. ``frame`` picks the first layout whose rendering fits the
console's width and height (measured by rich itself, not guessed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ClusterShell.NodeSet import NodeSet
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from controller.fleet import STALE_AFTER_S, NodeView, telemetry_row
from controller.select import natural_key
from nodeagent.protocol import ONLINE

GUARD_RANK = {"normal": 0, "warm": 1, "hot": 2, "critical": 3}
GUARD_STYLE = {"warm": "yellow", "hot": "red", "critical": "bold red"}
STATE_STYLE = {"offline": "red", "stale": "yellow", "unknown": "dim"}
ROW_KEYS = ("temp_c", "fan_duty_pct", "fan_rpm", "power_w", "freq_mhz", "freq_cap_mhz", "throttle", "guard")
ROW_KEYS += ("job", "job_progress", "job_phase", "job_frozen")
MIXED = {"online": "on", "offline": "off", "stale": "stale", "unknown": "unk"}
SHORT = {"under_voltage": "uv", "freq_capped": "capped", "throttled": "thr", "soft_temp_limit": "soft"}


@dataclass(frozen=True)
class NodeLine:
    """One node as ``top`` shows it."""

    node: str
    state: str  # online | offline | stale | unknown (never seen, or no telemetry yet)
    age_s: float | None
    temp_c: float | None = None
    fan_duty_pct: float | None = None
    fan_rpm: int | None = None
    power_w: float | None = None
    freq_mhz: float | None = None
    freq_cap_mhz: float | None = None
    throttling: tuple[str, ...] = ()  # throttle bits set now (not the "occurred" ones)
    guard: str = "normal"
    frozen: bool = False
    job: str | None = None
    progress: float | None = None
    phase: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state,
            "telemetry_age_s": None if self.age_s is None else round(self.age_s, 1),
            "temp_c": self.temp_c,
            "fan_duty_pct": self.fan_duty_pct,
            "fan_rpm": self.fan_rpm,
            "power_w": self.power_w,
            "freq_mhz": self.freq_mhz,
            "freq_cap_mhz": self.freq_cap_mhz,
            "throttling": list(self.throttling),
            "guard": self.guard,
            "job_frozen": self.frozen,
            "job": self.job,
            "job_progress": self.progress,
            "job_phase": self.phase,
        }


@dataclass(frozen=True)
class Progress:
    """A job's progress as a live ``progress`` event said it (newer than the retained telemetry's)."""

    job: str
    fraction: float | None
    phase: str


def node_line(
    name: str,
    view: NodeView | None,
    age_s: float | None,
    progress: Progress | None = None,
    stale_s: float = STALE_AFTER_S,
) -> NodeLine:
    """``view`` (None: never seen) as a line; ``age_s``: how old its telemetry is."""
    if view is None or view.telemetry is None or view.status == "offline":
        # An offline node's last telemetry is history, not its state: shown as nothing rather than as now.
        state = "offline" if view is not None and view.status == "offline" else "unknown"
        return NodeLine(name, state, age_s if state == "offline" else None)
    d = telemetry_row(view.telemetry, ROW_KEYS)
    if view.status != ONLINE:
        state = "offline" if view.status == "offline" else "unknown"
    else:
        state = "stale" if age_s is not None and age_s > stale_s else "online"
    job = d["job"] if state in ("online", "stale") else None
    fraction, phase = d["job_progress"], d["job_phase"]
    if job and progress is not None and progress.job == job:
        fraction, phase = progress.fraction, progress.phase or phase
    return NodeLine(
        name,
        state,
        age_s,
        d["temp_c"],
        d["fan_duty_pct"],
        d["fan_rpm"],
        d["power_w"],
        d["freq_mhz"],
        d["freq_cap_mhz"],
        tuple(n for n in d["throttle"] if not n.endswith("_occurred")),
        d["guard"] if d["guard"] in GUARD_RANK else "normal",
        bool(d["job_frozen"]) and bool(job),
        job,
        fraction if job else None,
        phase if job else "",
    )


def hottest_first(lines: Iterable[NodeLine]) -> list[NodeLine]:
    """Hottest first; nodes without a temperature last, by name."""
    return sorted(lines, key=lambda line: (line.temp_c is None, -(line.temp_c or 0.0), natural_key(line.node)))


# --- the summary -------------------------------------------------------------------------------------------------
def summary(lines: list[NodeLine]) -> dict[str, Any]:
    states = {s: sum(1 for line in lines if line.state == s) for s in ("online", "stale", "offline", "unknown")}
    hot = [line for line in lines if line.temp_c is not None]
    hottest = max(hot, key=lambda line: line.temp_c or 0.0) if hot else None
    power = [line.power_w for line in lines if line.power_w is not None and line.state == "online"]
    jobs: dict[str, int] = {}
    for line in lines:
        if line.job:
            jobs[line.job] = jobs.get(line.job, 0) + 1
    return {
        "nodes": len(lines),
        **states,
        "hottest": hottest.node if hottest else None,
        "hottest_c": hottest.temp_c if hottest else None,
        "throttling": [line.node for line in lines if line.throttling],
        "guard": {g: [line.node for line in lines if line.guard == g] for g in ("warm", "hot", "critical")},
        "capped": [line.node for line in lines if line.freq_cap_mhz is not None],
        "power_w": round(sum(power), 1) if power else None,
        "jobs": jobs,
    }


def summary_text(s: dict[str, Any]) -> Text:
    text = Text(f"{s['nodes']} nodes: {s['online']} online")
    for state in ("stale", "offline", "unknown"):
        if s[state]:
            text.append(f", {s[state]} {state}", style=STATE_STYLE[state])
    if s["hottest"]:
        text.append(f" · hottest {s['hottest']} {s['hottest_c']:.1f}°C")
    for level in ("critical", "hot", "warm"):
        if s["guard"][level]:
            text.append(f" · {len(s['guard'][level])} {level}", style=GUARD_STYLE[level])
    if s["throttling"]:
        text.append(f" · {len(s['throttling'])} throttling", style="red")
    if s["capped"]:
        text.append(f" · {len(s['capped'])} capped", style="yellow")
    if s["power_w"] is not None:
        text.append(f" · {s['power_w']:.0f} W")
    if s["jobs"]:
        text.append(f" · {len(s['jobs'])} job(s) on {sum(s['jobs'].values())} node(s)")
    return text


# --- cells -------------------------------------------------------------------------------------------------------
# Narrow consoles (below WIDE columns) get compact cells: whole degrees in ranges, no fan speed, short job ids.
WIDE = 110


def _rng(values: list[float], fmt: str, unit: str = "", range_fmt: str = "") -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if format(lo, fmt) == format(hi, fmt):
        return f"{lo:{fmt}}{unit}"
    rf = range_fmt or fmt
    return f"{lo:{rf}}–{hi:{rf}}{unit}"


def _temp(lines: list[NodeLine], narrow: bool) -> Text:
    worst = max((GUARD_RANK[line.guard] for line in lines), default=0)
    style = GUARD_STYLE.get(next(g for g, r in GUARD_RANK.items() if r == worst), "")
    temps = [line.temp_c for line in lines if line.temp_c is not None]
    return Text(_rng(temps, ".1f", "°", ".0f" if narrow else ""), style=style)


def _fan(lines: list[NodeLine], rpm: bool) -> str:
    duty = _rng([line.fan_duty_pct for line in lines if line.fan_duty_pct is not None], ".0f", "%")
    speeds = [float(line.fan_rpm) for line in lines if line.fan_rpm is not None]
    if rpm and speeds:
        return f"{duty} {_rng(speeds, '.0f')}rpm" if duty != "-" else f"{_rng(speeds, '.0f')}rpm"
    return duty


def _power(lines: list[NodeLine], total: bool) -> str:
    watts = [line.power_w for line in lines if line.power_w is not None]
    if total and len(watts) > 1:
        return f"{sum(watts):.0f}W"
    return _rng(watts, ".1f", "W")


def _freq(lines: list[NodeLine]) -> Text:
    text = Text(_rng([line.freq_mhz for line in lines if line.freq_mhz is not None], ".0f"))
    caps = [line.freq_cap_mhz for line in lines if line.freq_cap_mhz is not None]
    if caps:
        text.append(f"/{_rng(caps, '.0f')}", style="yellow")
    flags = sorted({SHORT.get(n, n) for line in lines for n in line.throttling})
    if flags:
        text.append(" " + ",".join(flags), style="red")
    return text


def _guard(lines: list[NodeLine], narrow: bool) -> Text:
    levels = sorted({line.guard for line in lines}, key=GUARD_RANK.__getitem__)
    # A group in several levels shows its worst ("≤hot": none hotter than that).
    text = Text(("≤" if len(levels) > 1 else "") + levels[-1], style=GUARD_STYLE.get(levels[-1], ""))
    if any(line.frozen for line in lines):
        text.append(" frz" if narrow else " frozen", style="red")
    return text


def short_job(job: str) -> str:
    """``hpl-20261123-142501-3fa2`` -> ``hpl…3fa2`` (the kind and the random tail tell jobs apart)."""
    head, _, tail = job.rpartition("-")
    kind = job.split("-", 1)[0] if head else job
    return f"{kind}…{tail}" if head and len(job) > 12 else job


def _job(lines: list[NodeLine], narrow: bool) -> str:
    jobs = sorted({line.job for line in lines if line.job})
    if not jobs:
        return "-"
    if len(jobs) > 1:
        return f"{len(jobs)} jobs"
    return short_job(jobs[0]) if narrow else jobs[0]


def _progress(lines: list[NodeLine], narrow: bool) -> str:
    fractions = [line.progress * 100 for line in lines if line.progress is not None]
    pct = _rng(fractions, ".0f", "%")
    phases = {line.phase for line in lines if line.phase}
    if len(lines) == 1 and phases and not narrow:
        return f"{pct} {next(iter(phases))}" if pct != "-" else next(iter(phases))
    return pct if pct != "-" or not phases or narrow else next(iter(phases))


def _state(lines: list[NodeLine]) -> Text:
    states = sorted({line.state for line in lines})
    if len(states) > 1:  # a folded row of several states: short, so the figures keep their columns
        return Text("/".join(MIXED[s] for s in states), style="yellow")
    age = [line.age_s for line in lines if line.state == "stale" and line.age_s is not None]
    return Text(states[0] + (f" {max(age):.0f}s" if age else ""), style=STATE_STYLE.get(states[0], ""))


# --- layouts -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How detailed: one row per node (``key`` None), or nodes folded by a state ``key``."""

    name: str
    key: Callable[[NodeLine], tuple[Any, ...]] | None


LAYOUTS = (
    Layout("per-node", None),
    Layout("state", lambda x: (x.state, x.guard, x.frozen, x.throttling, x.freq_cap_mhz is not None, x.job)),
    Layout("alarm", lambda x: (x.state, x.guard, bool(x.throttling), x.job is not None)),
    Layout("status", lambda x: (x.state, GUARD_RANK[x.guard] >= 2 or bool(x.throttling))),
    Layout("all", lambda x: ()),
)


def groups(lines: list[NodeLine], key: Callable[[NodeLine], tuple[Any, ...]]) -> list[list[NodeLine]]:
    """Lines with the same key together; the group with the hottest node first."""
    by: dict[tuple[Any, ...], list[NodeLine]] = {}
    for line in lines:
        by.setdefault(key(line), []).append(line)
    return hottest_groups(by.values())


def hottest_groups(gs: Iterable[list[NodeLine]]) -> list[list[NodeLine]]:
    def hottest(g: list[NodeLine]) -> tuple[bool, float]:
        temps = [line.temp_c for line in g if line.temp_c is not None]
        return (not temps, -max(temps) if temps else 0.0)

    return sorted((hottest_first(g) for g in gs), key=hottest)


COLUMNS = ("STATE", "TEMP", "FAN", "POWER", "FREQ", "GUARD", "JOB", "PROGRESS")
RIGHT = ("N", "TEMP", "FAN", "POWER")
DROP_ORDER = ("FAN", "POWER", "PROGRESS", "JOB", "FREQ")  # what a console too narrow for all of them loses first
MIN_NAMES = 12


def table(rows: list[list[NodeLine]], *, width: int, folded: bool) -> Table:
    """One row per group (a group of one is a node). Every column but the node names stays on one line and keeps
    its whole width; the names get the rest and wrap (a long node set folds over several lines, never cut). A
    console too narrow for every column drops the least needed ones (``DROP_ORDER``)."""
    narrow = width < WIDE
    header = ["NODES" if folded else "NODE", *(["N"] if folded else []), *COLUMNS]
    if narrow:
        header[-1] = "PROG"
    cells: list[list[RenderableType]] = []
    for g in rows:
        row: list[RenderableType] = [str(NodeSet.fromlist([line.node for line in g]))]
        if folded:
            row.append(str(len(g)))
        row += [
            _state(g),
            _temp(g, narrow),
            _fan(g, rpm=not narrow and not folded),
            _power(g, total=folded),
            _freq(g),
            _guard(g, narrow),
            _job(g, narrow),
            _progress(g, narrow),
        ]
        cells.append(row)
    widths = [max([len(h), *(Text(str(r[i])).cell_len if not isinstance(r[i], Text) else r[i].cell_len for r in cells)])
              for i, h in enumerate(header)]  # fmt: skip
    names = max(4, min(widths[0], MIN_NAMES))
    keep = list(range(len(header)))
    for col in DROP_ORDER:
        if names + sum(widths[i] + 1 for i in keep[1:]) <= width:
            break
        keep.remove(header.index(col if not (narrow and col == "PROGRESS") else "PROG"))
    t = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    rest = sum(widths[i] + 1 for i in keep[1:])
    t.add_column(header[0], overflow="fold", width=max(names, min(widths[0], width - rest)))
    for i in keep[1:]:
        t.add_column(header[i], justify="right" if header[i] in RIGHT else "left", no_wrap=True, min_width=widths[i])
    for row in cells:
        t.add_row(*(row[i] for i in keep))
    return t


def height_of(console: Console, renderable: RenderableType, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update(width=width), pad=False))


def frame(
    lines: list[NodeLine],
    *,
    console: Console,
    width: int,
    height: int | None,
    title: str = "",
    layouts: tuple[Layout, ...] = LAYOUTS,
) -> tuple[RenderableType, str]:
    """The most detailed rendering of ``lines`` that fits ``width`` x ``height`` (None: any height), and the
    layout's name. When even one row per state does not fit (very long node sets), the last layout is shown."""
    head = Text(title, style="bold") if title else None
    top = [*([head] if head else []), summary_text(summary(lines))]
    chosen: RenderableType = Group(*top)
    name = "none"
    for layout in layouts:
        if layout.key is None:
            if height is not None and len(lines) + len(top) + 1 > height:
                continue  # too many rows to try: one per node plus the header
            rows = [[line] for line in hottest_first(lines)]
        else:
            rows = groups(lines, layout.key)
        chosen, name = Group(*top, table(rows, width=width, folded=layout.key is not None)), layout.name
        if height is None or height_of(console, chosen, width) <= height:
            break
    return chosen, name


def to_json(lines: list[NodeLine], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**extra, "summary": summary(lines), "nodes": [line.to_dict() for line in hottest_first(lines)]}
