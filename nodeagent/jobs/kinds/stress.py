"""The ``stress`` job kind: stress-ng for burn-in and thermal tests, with bogo ops per second per stressor.

stress-ng (Debian package ``stress-ng``) runs ``--<stressor> <workers>`` for ``--timeout <duration>s`` and writes
its metrics twice: as ``--metrics-brief`` lines on stderr and as YAML (``--yaml FILE``). The YAML is read first;
the text lines are the fallback (an older stress-ng, or a YAML file that was not written).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nodeagent.errors import JobFailed
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.params import ParamSpec, resolve
from nodeagent.protocol.messages import Scalar

YAML_NAME = "stress.yaml"
STRESSORS = ("cpu", "matrix", "vm", "stream", "cache", "memrate")
# How long stress-ng may take beyond its own timeout to stop its workers and write the report.
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class StressorMetrics:
    """One stressor's line of ``--metrics-brief``."""

    stressor: str
    bogo_ops: int
    real_time_s: float
    usr_time_s: float
    sys_time_s: float
    bogo_ops_per_s: float  # over real (wall) time: the figure to compare between nodes
    bogo_ops_per_cpu_s: float  # over usr+sys time


def parse_yaml_metrics(text: str) -> list[StressorMetrics]:
    """The ``metrics:`` section of stress-ng's YAML report (a list of flat maps), read without a YAML library."""
    items: list[dict[str, str]] = []
    in_metrics = False
    for line in text.splitlines():
        if not line.startswith(" ") and line.strip():
            in_metrics = line.strip() == "metrics:"
            continue
        if not in_metrics:
            continue
        m = re.match(r"^\s*(-\s+)?([A-Za-z0-9_-]+):\s*(.*?)\s*$", line)
        if not m:
            continue
        if m.group(1):
            items.append({})
        if items:
            items[-1][m.group(2)] = m.group(3).strip("'\"")
    out = []
    for item in items:
        try:
            out.append(
                StressorMetrics(
                    stressor=item["stressor"],
                    bogo_ops=int(float(item["bogo-ops"])),
                    real_time_s=float(item["wall-clock-time"]),
                    usr_time_s=float(item["user-time"]),
                    sys_time_s=float(item["system-time"]),
                    bogo_ops_per_s=float(item["bogo-ops-per-second-real-time"]),
                    bogo_ops_per_cpu_s=float(item["bogo-ops-per-second-usr-sys-time"]),
                )
            )
        except (KeyError, ValueError):
            continue  # a stressor whose report is incomplete is left out, never guessed
    return out


_METRIC_LINE = re.compile(
    r"^stress-ng:\s+(?:metrc|info):\s+\[\d+\]\s+([A-Za-z0-9_-]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
    r"\s+([\d.]+)\s+([\d.]+)\s*$"
)


def parse_metrics_brief(text: str) -> list[StressorMetrics]:
    """The per-stressor lines of ``--metrics-brief`` (``stress-ng: metrc: [pid] cpu 4746 2.00 3.37 0.01 ...``)."""
    out = []
    for line in text.splitlines():
        m = _METRIC_LINE.match(line.strip())
        if m:
            name, ops, real, usr, sys_, rate, cpu_rate = m.groups()
            out.append(
                StressorMetrics(name, int(ops), float(real), float(usr), float(sys_), float(rate), float(cpu_rate))
            )
    return out


PARAMS = {
    "stressor": ParamSpec("choice", "cpu", choices=STRESSORS, help="the stress-ng stressor"),
    "workers": ParamSpec("int", None, min=0, max=1024, help="worker processes; 0: one per online CPU"),
    "duration_s": ParamSpec("int", None, min=1, max=7 * 24 * 3600, help="how long to stress"),
    "vm_bytes": ParamSpec("str", "", pattern=r"(\d{1,12}[KMGkmg]?|\d{1,3}%)?", help="vm: memory per worker"),
}


class StressKind:
    """stress-ng on this node for ``duration_s`` with ``workers`` of one ``stressor``."""

    name = "stress"

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        defaults = {"workers": ctx.cfg.stress_workers, "duration_s": ctx.cfg.stress_duration_s}
        values = resolve(PARAMS, {**defaults, **params}, "stress")
        stressor, workers, duration = str(values["stressor"]), int(values["workers"]), int(values["duration_s"])
        argv = [ctx.cfg.stress_ng, f"--{stressor}", str(workers), "--timeout", f"{duration}s"]
        if stressor == "vm" and values["vm_bytes"]:
            argv += ["--vm-bytes", str(values["vm_bytes"])]
        argv += ["--metrics-brief", "--yaml", YAML_NAME]
        plan = {"stressor": stressor, "workers": workers or ctx.cores, "duration_s": duration}
        return Prepared(
            argv=tuple(argv),
            plan=plan,
            timeout_s=duration + STOP_GRACE_S,
            install_hint="apt install stress-ng",
        )

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        if not ctx.started:
            return None
        duration = _planned_duration(output_tail)
        elapsed = time.monotonic() - ctx.started
        if duration is None:
            return Progress(None, "stressing")
        return Progress(min(1.0, elapsed / duration), f"stressing {elapsed:.0f}/{duration:.0f} s")

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        metrics = parse_yaml_metrics(_read(ctx, YAML_NAME)) or parse_metrics_brief(output)
        if returncode != 0:
            raise JobFailed(f"stress-ng exited with status {returncode}: {_problem(output)}")
        if not metrics:
            raise JobFailed("stress-ng reported no metrics (neither stress.yaml nor --metrics-brief lines)")
        return {
            "passed": True,
            "stressors": [asdict(m) for m in metrics],
            "bogo_ops_per_s": round(sum(m.bogo_ops_per_s for m in metrics), 2),
            **{k: prepared.plan[k] for k in ("stressor", "workers", "duration_s")},
        }


def _planned_duration(tail: str) -> float | None:
    m = re.search(r"setting to a (\d+) second", tail) or re.search(r"setting to a ([\d.]+) secs? run", tail)
    return float(m.group(1)) if m else None


def _problem(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if re.search(r"(?i)error|fail|cannot|not ", line)]
    return (" | ".join(lines[-3:]) or "(no error message)")[:300]


def _read(ctx: JobContext, name: str) -> str:
    """stress-ng's YAML, never through a link the job planted (JobContext.read); "" when unusable: the brief
    metrics in the output are the fallback."""
    try:
        return ctx.read(name)
    except OSError:
        return ""
