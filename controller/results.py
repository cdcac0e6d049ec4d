"""A job's result: its one shape (``job_result``), and a stored job as the operator wants it: a top500-benchmark
README row (md), CSV, JSON. Pure.

Every run command prints ``job_result`` (``--json``) and the history stores it (without ``runs``, which it keeps
per node): cluster and per-node alike, ``gflops`` is the job's figure (a cluster run's own, or the sum over the
nodes that passed), beside the kind's other figures (``power_avg_w``, ``wall_power_avg_w`` …). No key is required.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from controller.dispatch import NodeRun
from controller.history import JobRecord, job_state

TOP500_HEADER = "| Configuration | Architecture | Result | Wattage | Gflops/W |\n|--- |--- |--- |--- |--- |"
_FIXED = ["job", "node", "state", "reason"]


def job_result(
    job_id: str, kind: str, mode: str, runs: Sequence[NodeRun], *, state: str = "", **figures: Any
) -> dict[str, Any]:
    """The result of a job, one shape for every kind and mode (``cluster`` or ``per-node``): its id, kind, mode,
    state, whether it passed, the nodes, each node's part (``runs``) and the job's figures. A per-node HPL job's
    ``gflops`` is the sum over the nodes that passed; ``state`` (a cluster run's own verdict) is ``passed`` when
    the job passed, else what the caller says or the nodes' endings."""
    passed = figures.pop("passed", None)
    passed = bool(runs) and all(r.passed for r in runs) if passed is None else bool(passed)
    if kind == "hpl" and mode == "per-node":
        figures["gflops"] = sum(float(r.result.get("gflops", 0.0)) for r in runs if r.passed and r.result)
    return {
        "job": job_id,
        "kind": kind,
        "mode": mode,
        "state": "passed" if passed else state or job_state((r.state, r.passed) for r in runs),
        "passed": passed,
        "nodes": [r.node for r in runs],
        "runs": [r.to_dict() for r in runs],
        **figures,
    }


def job_gflops(job: JobRecord) -> float | None:
    """The job's Gflops: the job-level figure, else the sum over the nodes that passed."""
    result = job.result or {}
    if isinstance(result.get("gflops"), int | float):
        return float(result["gflops"])
    passed = [r.result for r in job.runs if r.state == "finished" and r.result and r.result.get("passed")]
    figures = [float(r["gflops"]) for r in passed if isinstance(r.get("gflops"), int | float)]
    return sum(figures) if figures else None  # None: not an HPL job, or no node passed


def job_watts(job: JobRecord) -> tuple[float | None, str]:
    """Average power and where it came from: the wall plug (as top500 measures), else the boards' own rails."""
    result = job.result or {}
    for key, source in (("wall_power_avg_w", "wall"), ("power_avg_w", "board")):
        if isinstance(result.get(key), int | float) and result[key] > 0:
            return float(result[key]), source
    return None, ""


def significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits without an exponent or trailing zeros: 32.152, 132, 9.2."""
    if value == 0 or not math.isfinite(value):
        return format(value, "g")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _configuration(job: JobRecord) -> str:
    models = [str(f.get("model") or f.get("board") or "") for f in job.facts.values() if isinstance(f, dict)]
    model = max(set(models), key=models.count) if any(models) else ""
    count = len(job.nodes)
    if count == 1:
        return model or job.nodes[0]
    return f"{job.cluster or 'picluster'} ({count}x {model or 'node'})"


def _architecture(job: JobRecord) -> str:
    cpus = {str(f.get("cpu", "")) for f in job.facts.values() if isinstance(f, dict)}
    if cpus and all(c.startswith(("Cortex", "Neoverse", "ARM", "Arm")) for c in cpus):
        return "Arm"
    return "/".join(sorted(c for c in cpus if c)) or "-"


def top500_row(job: JobRecord, *, name: str = "", link: str = "", arch: str = "") -> str:
    """One row of top500-benchmark's README table:
    ``| [Configuration](link) | Arm | 32.152 Gflops | 9.2W | 3.49 Gflops/W |``."""
    config = name or _configuration(job)
    if link:
        config = f"[{config}]({link})"
    gflops = job_gflops(job)
    watts, _ = job_watts(job)
    result = f"{significant(gflops, 5)} Gflops" if gflops is not None else "-"
    wattage = f"{significant(watts, 3)}W" if watts is not None else "-"
    per_w = f"{gflops / watts:.2f} Gflops/W" if gflops is not None and watts else "-"
    return f"| {config} | {arch or _architecture(job)} | {result} | {wattage} | {per_w} |"


def to_json(job: JobRecord) -> str:
    return json.dumps(job.to_dict(), indent=2, sort_keys=True)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def to_csv(job: JobRecord) -> str:
    """One row per node and, when there is one, a row ``node = (job)`` with the job-level result. Result keys
    become columns; values other than text are JSON (numbers, true/false, lists, maps)."""
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    if job.result:
        rows.append(("(job)", job.state, "", job.result))
    rows += [(r.node, r.state, r.reason, r.result or {}) for r in job.runs]
    keys = sorted({k for *_, result in rows for k in result} - set(_FIXED))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_FIXED, *keys])
    for node, state, reason, result in rows:
        writer.writerow([job.id, node, state, reason, *(_cell(result.get(k)) for k in keys)])
    return out.getvalue()
