"""Tables and lines for the operator, and the JSON twins for scripts.

Plain text: a table is aligned columns, a line is a line. No markup language sits between a value and the
screen (a node set such as ``n[1-4]`` in a reason prints as it is), and a command that prints a table does not
load a rendering library for it (rich draws only the per-node HPL progress bars, on a terminal).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from controller.dispatch import NodeRun
    from controller.fleet import NodeView

GAP = "  "  # between columns


def console(stderr: bool = False) -> Console:
    """A rich console (for progress bars)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal rich would wrap at 80 columns; a log or a pipe wants whole rows.
    return Console(file=stream, width=None if stream.isatty() else 200, highlight=False)


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


class Table:
    """Rows under a header, in aligned columns; the last column is not padded."""

    def __init__(self, *columns: str, right: Iterable[str] = ()) -> None:
        self.columns = columns
        self.right = frozenset(right)
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(tuple(" ".join(str(c).split("\n")) for c in cells))

    def render(self) -> str:
        lines = [self.columns, *self.rows]
        widths = [max(width(line[i]) for line in lines) for i in range(len(self.columns))]
        out = []
        for line in lines:
            cells = []
            for i, (cell, col) in enumerate(zip(line, self.columns, strict=True)):
                pad = " " * (widths[i] - width(cell))
                last = i == len(self.columns) - 1
                cells.append(pad + cell if col in self.right else cell + ("" if last else pad))
            out.append(GAP.join(cells).rstrip())
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()

    def __rich__(self) -> Text:  # printed on a rich console: as it is, no markup
        from rich.text import Text

        return Text(self.render())


def table(*columns: str, right: Iterable[str] = ()) -> Table:
    """An empty table with these columns (those in ``right`` right-aligned)."""
    return Table(*columns, right=right)


def say(line: str | Table, *, stderr: bool = False) -> None:
    """One line (or a table) for the operator, at once: stdout, or stderr for what is not the command's answer."""
    print(line, file=sys.stderr if stderr else sys.stdout, flush=True)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _fan(d: dict[str, Any]) -> str:
    if d["fan_duty_pct"] is None and d["fan_rpm"] is None:
        return "-"
    duty = "-" if d["fan_duty_pct"] is None else f"{d['fan_duty_pct']:.0f}%"
    return duty + (f" {d['fan_rpm']} rpm" if d["fan_rpm"] is not None else "")


def _nvme(d: dict[str, Any]) -> str:
    """The hottest drive's temperature, and what is wrong with any drive."""
    drives = d["nvme"]
    if not drives:
        return "-"
    if any(not x["present"] for x in drives):
        return "GONE"
    temps = [x["temp_c"] for x in drives if x["temp_c"] is not None]
    warn = sorted({w for x in drives for w in x["warnings"]})
    return (f"{max(temps):.0f}°C" if temps else "?") + (f" {','.join(warn)}" if warn else "")


def _health(d: dict[str, Any]) -> str:
    """Throttling now, degraded PCIe links and rising AER errors: what needs a look."""
    issues = [n for n in d["throttle"] if not n.endswith("_occurred")]
    issues += [f"pcie {p['device']} degraded" for p in d["pcie"] if p["degraded"]]
    issues += [f"aer rising {p['device']}" for p in d["pcie"] if p["aer_rising"]]
    issues += ["sensor errors"] if d["errors"] else []
    return ", ".join(issues) or "ok"


# An online node whose first telemetry has not arrived yet (it publishes one every agent.tick_s).
WAITING = "waiting for first report"


def nodes_table(views: Iterable[NodeView], now: float) -> Table:
    cols = ("NODE", "STATE", "BOARD", "TEMP", "FREQ", "LOAD", "MEM FREE", "FAN", "POWER", "NVME", "HEALTH", "AGENT")
    rows = table(*cols, "JOB", right=("TEMP", "FREQ", "LOAD", "MEM FREE", "POWER"))
    for v in views:
        d = v.to_dict(now)
        stale = d["telemetry_age_s"] is not None and d["telemetry_age_s"] > 10
        rows.add_row(
            v.name,
            v.status + (" (stale)" if stale and v.online else ""),
            d["board"] or "-",
            _num(d["temp_c"], ".1f") + ("°C" if d["temp_c"] is not None else ""),
            _num(d["freq_mhz"], ".0f") + (" MHz" if d["freq_mhz"] is not None else ""),
            _num(d["load1"], ".2f"),
            _num(d["mem_avail_mb"], "d") + (" MB" if d["mem_avail_mb"] is not None else ""),
            _fan(d),
            _num(d["power_w"], ".1f") + (" W" if d["power_w"] is not None else ""),
            _nvme(d),
            _health(d) if v.telemetry else (WAITING if v.online else "-"),
            d["agent_version"] or "-",
            d["job"] or "-",
        )
    return rows


def hpl_results_table(runs: Iterable[NodeRun]) -> tuple[Table, float]:
    """One row per node and the total Gflops of the nodes that passed."""
    cols = ("NODE", "RESULT", "GFLOPS", "N", "NB", "PxQ", "TIME", "RESIDUAL", "NOTE")
    rows = table(*cols, right=("GFLOPS", "N", "NB", "TIME", "RESIDUAL"))
    total = 0.0
    for run in runs:
        r = run.result or {}
        verdict = "PASSED" if run.passed else ("FAILED" if run.state == "finished" else run.state.upper())
        if run.passed:
            total += float(r.get("gflops", 0.0))
        rows.add_row(
            run.node,
            verdict,
            _num(r.get("gflops"), ".2f"),
            _either(r, run.plan, "n"),
            _either(r, run.plan, "nb"),
            f"{_either(r, run.plan, 'p')}x{_either(r, run.plan, 'q')}",
            _num(r.get("time_s"), ".2f") + ("s" if r.get("time_s") is not None else ""),
            _num(r.get("residual"), ".3e"),
            run.reason,
        )
    return rows, total


def _either(result: Mapping[str, Any], plan: Mapping[str, Any], key: str) -> str:
    """A value from the result, else from the plan, else a dash."""
    for source in (result, plan):
        if source.get(key) is not None:
            return str(source[key])
    return "-"


# The figure each kind's result table shows (a template: its exit status).
FIGURES = {
    "stress": ("bogo_ops_per_s", "bogo ops/s"),
    "llama-bench": ("gen_tps", "tg t/s"),
    "llama-rpc": ("gen_tps", "tg t/s"),
    "dllama": ("gen_tps", "pred t/s"),
}


def kind_results_table(kind: str, runs: Iterable[NodeRun]) -> Table:
    """One row per node for a job other than HPL: its verdict, the kind's figure, and the reason."""
    key, label = FIGURES.get(kind, ("returncode", "exit"))
    table = Table("NODE", "RESULT", label.upper(), "PROMPT T/S", "NOTE")
    for run in runs:
        r = run.result or {}
        verdict = "PASSED" if run.passed else run.state.upper()
        note = run.reason or (run.ready.get("address", "") if run.ready else "")
        table.add_row(run.node, verdict, _figure(r.get(key)), _figure(r.get("prompt_tps")), note)
    return table


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_line(run: NodeRun) -> str:
    """One progress line for a non-terminal log: what the node does, never a placeholder for a missing value."""
    if run.state == "accepted":
        what = plan_summary(run.plan)
        return f"{run.node}: accepted ({what})" if what else f"{run.node}: accepted"
    if run.state == "running" and run.progress is not None:
        return f"{run.node}: running {run.progress:4.0%} {run.phase}".rstrip()
    if run.state == "running" and run.phase:
        return f"{run.node}: running ({run.phase})"
    if run.reason:
        return f"{run.node}: {run.state}: {run.reason}"
    if run.phase and not run.ended:  # an ended run's phase is its last progress, no longer what it does
        return f"{run.node}: {run.state} ({run.phase})"
    return f"{run.node}: {run.state}"


def plan_summary(plan: Mapping[str, Any]) -> str:
    """What a node's accepted plan says it will do, in words; parts the plan lacks are left out."""
    role, leader = plan.get("role"), plan.get("leader")
    if role == "member":
        return f"member of {leader}'s run" if _given(leader) else "member of a cluster run"
    if role == "worker":
        where = (
            f"{plan.get('host')}:{plan.get('port')}" if _given(plan.get("host")) and _given(plan.get("port")) else ""
        )
        return f"worker, serving on {where}" if where else "worker"
    hpl = _hpl_words(plan)
    if role == "leader" and hpl:
        hosts = plan.get("hosts")
        over = f" over {len(hosts)} nodes" if isinstance(hosts, (list, tuple)) else ""
        return f"leader: {hpl}{over}"
    if hpl:
        return hpl
    if role == "root" and _given(plan.get("nodes")):
        return f"root of {plan['nodes']} nodes"
    if role == "leader":
        model = f", model {plan['model']}" if _given(plan.get("model")) else ""
        return f"leader{model}" + (f", workers {plan['rpc']}" if _given(plan.get("rpc")) else "")
    if _given(plan.get("template")):
        return f"template {plan['template']}"
    words = [f"{k}={v}" for k, v in plan.items() if _given(v) and isinstance(v, (str, int, float)) and k != "params"]
    return ", ".join(words)


def _hpl_words(plan: Mapping[str, Any]) -> str:
    """``N=… NB=… P×Q=…x…`` from the parts the plan has."""
    parts = [f"{label}={plan[key]}" for key, label in (("n", "N"), ("nb", "NB")) if _given(plan.get(key))]
    if _given(plan.get("p")) and _given(plan.get("q")):
        parts.append(f"P×Q={plan['p']}x{plan['q']}")
    return " ".join(parts)


def _given(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def print_json(data: Any) -> None:
    # One write: json.dump writes every token separately (250,000 writes for a 1,000-node `nodes --json`).
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
