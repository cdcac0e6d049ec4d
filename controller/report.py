"""Tables and lines for the operator (rich), and the JSON twins for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from controller.dispatch import NodeRun
from controller.fleet import NodeView


def print_table(table: Table, out: Console | None = None) -> None:
    """Print one of our tables (``box=None``, plain string cells). Laid out here when it fits the width (or the
    output is no terminal): rich's layout took 0.7 s for a 1,050-row ``nodes``; rich otherwise, to fit a narrow
    terminal. The layout is rich's: columns two spaces apart, each as wide as its widest cell."""
    out = out or console()
    text = plain_table(table)
    if text is None or (out.is_terminal and max(map(cell_len, text.splitlines()), default=0) > out.width):
        out.print(table)
        return
    out.file.write(text + "\n")
    out.file.flush()


def plain_table(table: Table) -> str | None:
    """The table as text, or None when it is not plain (a box, or a cell that is not a string)."""
    if table.box is not None:
        return None
    columns = [[col.header, *col.cells] for col in table.columns]
    if not all(isinstance(cell, str) for col in columns for cell in col):
        return None
    widths = [max(map(cell_len, col)) for col in columns]
    lines = []
    for row in zip(*columns, strict=True):
        cells = [
            cell.rjust(w - cell_len(cell) + len(cell))
            if col.justify == "right"
            else cell.ljust(w - cell_len(cell) + len(cell))
            for cell, w, col in zip(row, widths, table.columns, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def line(out: Console, text: str) -> None:
    """One plain line: no markup (a reason may hold brackets), no layout; a thousand nodes print thousands."""
    out.file.write(text + "\n")


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal rich would wrap at 80 columns; a log or a pipe wants whole rows.
    return Console(file=stream, width=None if stream.isatty() else 200, highlight=False)


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


def nodes_table(views: Iterable[NodeView], now: float) -> Table:
    table = Table(box=None, pad_edge=False)
    right = ("TEMP", "FREQ", "LOAD", "MEM FREE", "POWER")
    for col in (
        "NODE",
        "STATE",
        "BOARD",
        "TEMP",
        "FREQ",
        "LOAD",
        "MEM FREE",
        "FAN",
        "POWER",
        "NVME",
        "HEALTH",
        "AGENT",
        "JOB",
    ):
        table.add_column(col, justify="right" if col in right else "left")
    for v in views:
        d = v.to_dict(now)
        stale = d["telemetry_age_s"] is not None and d["telemetry_age_s"] > 10
        table.add_row(
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
            _health(d) if v.telemetry else "-",
            d["agent_version"] or "-",
            d["job"] or "-",
        )
    return table


def hpl_results_table(runs: Iterable[NodeRun]) -> tuple[Table, float]:
    """One row per node and the total Gflops of the nodes that passed."""
    table = Table(box=None, pad_edge=False)
    for col in ("NODE", "RESULT", "GFLOPS", "N", "NB", "PxQ", "TIME", "RESIDUAL", "NOTE"):
        table.add_column(col, justify="right" if col in ("GFLOPS", "N", "NB", "TIME", "RESIDUAL") else "left")
    total = 0.0
    for run in runs:
        r = run.result or {}
        verdict = "PASSED" if run.passed else ("FAILED" if run.state == "finished" else run.state.upper())
        if run.passed:
            total += float(r.get("gflops", 0.0))
        table.add_row(
            run.node,
            verdict,
            _num(r.get("gflops"), ".2f"),
            str(r.get("n", run.plan.get("n", "-"))),
            str(r.get("nb", run.plan.get("nb", "-"))),
            f"{r.get('p', run.plan.get('p', '-'))}x{r.get('q', run.plan.get('q', '-'))}",
            _num(r.get("time_s"), ".2f") + ("s" if r.get("time_s") is not None else ""),
            _num(r.get("residual"), ".3e"),
            run.reason,
        )
    return table, total


def run_line(run: NodeRun) -> str:
    """One progress line for a non-terminal log."""
    if run.state == "accepted" and run.plan:
        p = run.plan
        return f"{run.node}: accepted (N={p.get('n')} NB={p.get('nb')} P×Q={p.get('p')}x{p.get('q')})"
    if run.state == "running" and run.progress is not None:
        return f"{run.node}: running {run.progress:4.0%} {run.phase}".rstrip()
    if run.reason:
        return f"{run.node}: {run.state}: {run.reason}"
    return f"{run.node}: {run.state}"


def print_json(data: Any) -> None:
    # One write: json.dump writes every token separately (250,000 writes for a 1,000-node `nodes --json`).
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
