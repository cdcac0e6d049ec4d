"""Every participant's telemetry during a job, for the result's power, temperature and throttling figures and for
``piclusterctl plot``. Pure: fed telemetry, asked for the samples and the summary.

The samples are bounded: each node keeps at most ``per_node`` of them (``MAX_TOTAL_SAMPLES`` shared by the job's
nodes, between ``MIN_PER_NODE`` and ``MAX_PER_NODE``). When a node's list is full, neighbouring samples are merged
pairwise and the node keeps one sample in two from then on, so a long run is stored whole at a coarser step.
Merging keeps what a thermal plot is for: the higher temperature, power and fan, the lower frequency and cap,
every throttle bit and the worse guard level. The summary is computed from every sample fed, not the kept ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from controller.fleet import telemetry_row
from controller.session import Received
from nodeagent.errors import ProtocolError
from nodeagent.protocol import Telemetry, Topics, decode
from nodeagent.protocol.throttle import throttled_now

SAMPLE_KEYS = (
    "t",
    "temp_c",
    "freq_mhz",
    "freq_cap_mhz",
    "throttled",
    "power_w",
    "fan_duty_pct",
    "fan_rpm",
    "guard",
    "job",
)
MAX_PER_NODE = 1200  # 20 minutes at one sample a second before the step doubles
MIN_PER_NODE = 60
MAX_TOTAL_SAMPLES = 100_000  # about 15 MB of JSON for the whole job, however many nodes
_HIGHER = ("temp_c", "power_w", "fan_duty_pct", "fan_rpm")
_LOWER = ("freq_mhz", "freq_cap_mhz")
GUARD_ORDER = ("normal", "warm", "hot", "critical")


def per_node_limit(nodes: int) -> int:
    """The samples each of ``nodes`` nodes may keep."""
    return max(MIN_PER_NODE, min(MAX_PER_NODE, MAX_TOTAL_SAMPLES // max(1, nodes)))


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two neighbouring samples as one (at the later one's time), keeping the extremes that matter."""
    out = dict(b)
    for key in _HIGHER:
        out[key] = _pick(max, a.get(key), b.get(key))
    for key in _LOWER:
        out[key] = _pick(min, a.get(key), b.get(key))
    if a.get("throttled") is not None or b.get("throttled") is not None:
        out["throttled"] = (a.get("throttled") or 0) | (b.get("throttled") or 0)
    out["guard"] = max(a.get("guard"), b.get("guard"), key=_guard_rank)
    return out


def _pick(fn: Any, x: Any, y: Any) -> Any:
    values = [v for v in (x, y) if v is not None]
    return fn(values) if values else None


def _guard_rank(level: Any) -> int:
    return GUARD_ORDER.index(level) if level in GUARD_ORDER else -1


@dataclass
class _Series:
    """One node's kept samples and its running figures."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    step: int = 1  # keep one sample in ``step`` (doubles whenever the list is halved)
    seen: int = 0
    pending: dict[str, Any] | None = None  # samples skipped since the last kept one, merged
    power_sum: float = 0.0
    power_n: int = 0
    temp_peak: float | None = None
    throttled: bool = False

    def add(self, row: dict[str, Any], limit: int) -> None:
        self.seen += 1
        if row["power_w"] is not None:
            self.power_sum += row["power_w"]
            self.power_n += 1
        if row["temp_c"] is not None:
            self.temp_peak = row["temp_c"] if self.temp_peak is None else max(self.temp_peak, row["temp_c"])
        self.throttled = self.throttled or throttled_now(row["throttled"])
        row = row if self.pending is None else merge(self.pending, row)
        if self.seen % self.step:
            self.pending = row  # a throttle blip between kept samples still shows in the next one
            return
        self.pending = None
        self.rows.append(row)
        if len(self.rows) >= limit:
            self.rows = [merge(self.rows[i], self.rows[i + 1]) for i in range(0, len(self.rows) - 1, 2)]
            self.step *= 2


@dataclass
class Recorder:
    """Every participant's telemetry during the run."""

    nodes: tuple[str, ...]
    series: dict[str, _Series] = field(default_factory=dict)
    _latest_power: dict[str, float] = field(default_factory=dict)
    _power_peak: float | None = None

    def feed(self, node: str, t: Telemetry) -> None:
        if node not in self.nodes:
            return
        series = self.series.setdefault(node, _Series())
        series.add(telemetry_row(t, SAMPLE_KEYS), per_node_limit(len(self.nodes)))
        if t.power_w is not None:
            self._latest_power[node] = t.power_w
            total = sum(self._latest_power.values())
            self._power_peak = total if self._power_peak is None else max(self._power_peak, total)

    def topics(self, topics: Topics) -> tuple[str, ...]:
        """The telemetry topics of the job's nodes: a run subscribes to these alone, once it knows its nodes, so
        its snapshot and the nodes outside the job cost it nothing."""
        return tuple(topics.telemetry(node) for node in self.nodes)

    def tap(self, topics: Topics, msg: Received) -> None:
        """Feed a live telemetry message (a retained one is from before the run); anything else is ignored."""
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[1] != "telemetry" or msg.retained:
            return
        with contextlib.suppress(ProtocolError):  # a malformed sample is left out, not fatal
            self.feed(parsed[0], decode(msg.payload, Telemetry))

    @property
    def samples(self) -> dict[str, list[dict[str, Any]]]:
        """The kept samples of every node that sent any, in time order."""
        return {node: [*s.rows, *([s.pending] if s.pending else [])] for node, s in self.series.items()}

    def summary(self) -> dict[str, Any]:
        """power_avg_w / power_peak_w (summed over the nodes that report power; None when none does),
        temp_peak_c (and per node), and throttled per node (any current throttle bit seen)."""
        per_node_avg = [s.power_sum / s.power_n for s in self.series.values() if s.power_n]
        peaks = {n: s.temp_peak for n, s in self.series.items() if s.temp_peak is not None}
        return {
            "power_avg_w": round(sum(per_node_avg), 2) if per_node_avg else None,
            "power_peak_w": round(self._power_peak, 2) if self._power_peak is not None else None,
            "temp_peak_c": max(peaks.values()) if peaks else None,
            "temp_peak_by_node": {n: peaks.get(n) for n in self.nodes},
            "throttled": {n: bool(self.series.get(n) and self.series[n].throttled) for n in self.nodes},
        }

    def figures(self) -> dict[str, Any]:
        """What a job's result carries of the run's telemetry: the summary and the samples."""
        return {**self.summary(), "telemetry": self.samples}
