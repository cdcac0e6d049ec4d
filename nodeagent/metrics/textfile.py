"""Prometheus text exposition of one node (pure), and the atomic write node_exporter's textfile collector needs.

Names follow Prometheus conventions: base units (seconds, bytes, hertz, watts, celsius), ratios 0-1 instead of
percent, ``_total`` on counters, one ``# HELP``/``# TYPE`` per family, label values escaped.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.protocol import NodeFacts, Telemetry
from nodeagent.protocol.throttle import NOW_MASK, THROTTLE_BITS

GUARD_LEVELS = ("normal", "warm", "hot", "critical")
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its samples as (labels, value)."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float | int | bool | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((tuple(labels.items()), float(value)))


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The text exposition format (version 0.0.4). Families without samples are left out."""
    lines = []
    for f in families:
        if not f.samples:
            continue
        lines += [f"# HELP {f.name} {escape_help(f.help)}", f"# TYPE {f.name} {f.kind}"]
        for labels, value in f.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            lines.append(f"{f.name}{{{text}}} {format_value(value)}" if text else f"{f.name} {format_value(value)}")
    return "\n".join(lines) + "\n"


def node_families(t: Telemetry, facts: NodeFacts | None, cluster: str, last_hpl_gflops: float | None) -> list[Family]:
    """Every metric of one node's telemetry tick."""

    def fam(name: str, kind: str, text: str) -> Family:
        return Family(f"picluster_{name}", kind, text)

    info = fam("node_info", "gauge", "The node: name, cluster, board, model and agent version (always 1).")
    info.add(
        1,
        node=t.node,
        cluster=cluster,
        board=facts.board if facts else "",
        model=facts.model if facts else "",
        version=facts.agent_version if facts else "",
    )
    stamp = fam("telemetry_timestamp_seconds", "gauge", "When the agent took this sample (Unix time).")
    stamp.add(t.t)
    temp = fam("soc_temperature_celsius", "gauge", "SoC temperature.")
    temp.add(t.temp_c)
    freq = fam("cpu_frequency_hertz", "gauge", "CPU frequency of cpufreq policy0.")
    freq.add(None if t.freq_mhz is None else t.freq_mhz * 1e6)
    load = fam("load1", "gauge", "1-minute load average.")
    load.add(t.load1)
    mem_total = fam("memory_total_bytes", "gauge", "MemTotal.")
    mem_total.add(None if t.mem_total_mb is None else t.mem_total_mb * 2**20)
    mem_avail = fam("memory_available_bytes", "gauge", "MemAvailable.")
    mem_avail.add(None if t.mem_avail_mb is None else t.mem_avail_mb * 2**20)
    duty = fam("fan_duty_ratio", "gauge", "Fan duty the agent set, 0 to 1.")
    duty.add(None if t.fan_duty_pct is None else t.fan_duty_pct / 100.0)
    rpm = fam("fan_speed_rpm", "gauge", "Fan speed from its tachometer.")
    rpm.add(t.fan_rpm)
    mode = fam("fan_auto", "gauge", "1 when the fan follows the curve, 0 when an operator fixed its duty.")
    mode.add(t.fan_mode == "auto")
    power = fam("power_watts", "gauge", "PMIC rail power (board rails, not wall power).")
    power.add(t.power_w)
    input_power = fam("input_power_watts", "gauge", "Chassis input power through INA219/INA226 monitors.")
    input_power.add(t.input_power_w)
    throttle = fam("throttle_active", "gauge", "Firmware throttle flags happening now (get_throttled bits 0-3).")
    if t.throttled is not None:
        for bit, name in THROTTLE_BITS.items():
            if 1 << bit & NOW_MASK:
                throttle.add(bool(t.throttled >> bit & 1), flag=name)
    guard = fam("thermal_guard_level", "gauge", "Thermal guard level: 1 for the current one.")
    for level in GUARD_LEVELS:
        guard.add(t.guard == level, level=level)
    job = fam("job_running", "gauge", "1 while a job runs on the node.")
    job.add(t.job is not None)
    frozen = fam("job_frozen", "gauge", "1 while the thermal guard holds the running job frozen.")
    frozen.add(t.job_frozen)
    gflops = fam("hpl_last_gflops", "gauge", "Gflops of the last HPL run that finished on this node.")
    gflops.add(last_hpl_gflops)
    errors = fam("sensor_errors", "gauge", "Sensors that could not be read in this sample.")
    errors.add(len(t.errors))
    nvme = [
        fam("nvme_temperature_celsius", "gauge", "NVMe composite temperature."),
        fam("nvme_percentage_used_ratio", "gauge", "NVMe endurance used (SMART percentage used / 100)."),
        fam("nvme_available_spare_ratio", "gauge", "NVMe available spare (SMART / 100)."),
        fam("nvme_media_errors_total", "counter", "NVMe media and data integrity errors."),
        fam("nvme_critical_warning", "gauge", "NVMe SMART critical warning bits (0: none)."),
        fam("nvme_present", "gauge", "1 while the drive is on the bus."),
    ]
    for d in t.nvme:
        nvme[5].add(d.present, device=d.device)
        if not d.present:
            continue
        nvme[0].add(d.temp_c, device=d.device)
        nvme[1].add(None if d.percentage_used_pct is None else d.percentage_used_pct / 100.0, device=d.device)
        nvme[2].add(None if d.available_spare_pct is None else d.available_spare_pct / 100.0, device=d.device)
        nvme[3].add(d.media_errors, device=d.device)
        nvme[4].add(d.critical_warning if d.smart_t is not None else None, device=d.device)
    aer = fam("pcie_aer_errors_total", "counter", "PCIe AER errors reported by the device (root ports: seen below).")
    by_type = fam(
        "pcie_aer_errors_by_type_total",
        "counter",
        "PCIe AER errors the device itself reported, by error type as the kernel names it (types above zero only).",
    )
    degraded = fam("pcie_link_degraded", "gauge", "1 when the link trained below what both ends allow.")
    for p in t.pcie:
        for severity, count in (
            ("correctable", p.aer_correctable),
            ("nonfatal", p.aer_nonfatal),
            ("fatal", p.aer_fatal),
        ):
            aer.add(count, device=p.device, severity=severity)
            for name, n in sorted(p.aer_types.get(severity, {}).items()):
                by_type.add(n, device=p.device, severity=severity, type=name)
        degraded.add(p.degraded, device=p.device)
    return [info, stamp, temp, freq, load, mem_total, mem_avail, duty, rpm, mode, power, input_power, throttle,
            guard, job, frozen, gflops, errors, *nvme, aer, by_type, degraded]  # fmt: skip


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader never sees half a file: a temporary file in the same directory,
    then rename (node_exporter ignores files not ending in .prom, so the temporary name is invisible to it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
