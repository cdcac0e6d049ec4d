"""A recorded run as a picture: temperature, CPU frequency, power and fan of every node over the job, with the
samples where a node throttled marked, so throttling during HPL is visible at a glance.

The data is what the history stores with a job's result (``telemetry``: every node's samples, see
controller/recorder.py). matplotlib draws it with its Agg backend (no display); it is imported here only, so
piclusterctl runs without it until ``plot`` is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.history import JobRecord
from nodeagent.protocol.throttle import throttled_now

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL = "apt install python3-matplotlib"
LEGEND_MAX = 12  # more nodes than this: no legend (it would hide the plot), the title counts them
PANELS = (
    ("temp_c", "temperature (°C)"),
    ("freq_mhz", "CPU frequency (MHz)"),
    ("power_w", "power (W)"),
    ("fan", "fan"),
)


class PlotError(Exception):
    """The job cannot be plotted (no telemetry, matplotlib missing): one line naming the cause and the fix."""


def telemetry_of(job: JobRecord) -> dict[str, list[dict[str, Any]]]:
    """The job's recorded samples by node; PlotError when it has none."""
    samples = (job.result or {}).get("telemetry")
    if isinstance(samples, dict):
        samples = {n: rows for n, rows in samples.items() if isinstance(rows, list) and rows}
    if not samples:
        raise PlotError(
            f"job {job.id} has no recorded telemetry: piclusterctl records every node's telemetry with the result "
            "of the jobs it runs (`run …`, not --detach), and this one was not (an older piclusterctl, a detached "
            "run, or a job known here only from its nodes' events)"
        )
    return samples


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotError(f"piclusterctl plot needs matplotlib: {INSTALL}") from None
    matplotlib.use("Agg")  # no display: write files only
    from matplotlib.figure import Figure

    return Figure


def _series(rows: list[dict[str, Any]], key: str, t0: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        if isinstance(row.get(key), int | float) and isinstance(row.get("t"), int | float):
            xs.append(row["t"] - t0)
            ys.append(float(row[key]))
    return xs, ys


def throttle_spans(rows: list[dict[str, Any]], t0: float) -> list[tuple[float, float]]:
    """The stretches (seconds from ``t0``) during which the node's samples say it throttled; a lone sample is a
    stretch as wide as the step to the next sample."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    times = [float(r["t"]) - t0 for r in rows if isinstance(r.get("t"), int | float)]
    flags = [throttled_now(r.get("throttled")) for r in rows if isinstance(r.get("t"), int | float)]
    for i, (t, flag) in enumerate(zip(times, flags, strict=True)):
        if flag and start is None:
            start = t
        if start is not None and (not flag or i == len(times) - 1):
            end = t if not flag else (t + (t - times[i - 1] if i else 1.0))
            spans.append((start, end))
            start = None
    return spans


def fan_key(samples: dict[str, list[dict[str, Any]]]) -> str:
    """The fan as duty when any node reports it, else as speed."""
    duty = any(r.get("fan_duty_pct") is not None for rows in samples.values() for r in rows)
    return "fan_duty_pct" if duty else "fan_rpm"


def build_figure(job: JobRecord) -> Figure:
    """The figure of ``job``: four panels sharing the time axis (seconds from the first sample), one line per node
    (its ``gid`` is ``<key>:<node>``), red crosses (``gid`` ``throttled:<node>``) on the temperature and
    frequency where the node throttled, the frequency cap dashed."""
    samples = telemetry_of(job)
    figure_cls = _matplotlib()
    t0 = min(float(r["t"]) for rows in samples.values() for r in rows if isinstance(r.get("t"), int | float))
    fan = fan_key(samples)
    fig = figure_cls(figsize=(11, 9), dpi=100, layout="constrained")
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    throttled_nodes = []
    for index, node in enumerate(sorted(samples)):
        rows = samples[node]
        color = f"C{index % 10}"
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            xs, ys = _series(rows, fan if key == "fan" else key, t0)
            (line,) = ax.plot(xs, ys, color=color, linewidth=1.2, label=node)
            line.set_gid(f"{fan if key == 'fan' else key}:{node}")
        cap_x, cap_y = _series(rows, "freq_cap_mhz", t0)
        if cap_x:
            (cap,) = axes[1].plot(cap_x, cap_y, color=color, linestyle="--", linewidth=0.8)
            cap.set_gid(f"freq_cap_mhz:{node}")
        hot = [r for r in rows if throttled_now(r.get("throttled"))]
        if hot:
            throttled_nodes.append(node)
            for start, end in throttle_spans(rows, t0):  # shaded across every panel: visible at a glance
                for ax in axes:
                    ax.axvspan(start, end, color="red", alpha=0.08, linewidth=0).set_gid(f"throttle-span:{node}")
            for ax, key in ((axes[0], "temp_c"), (axes[1], "freq_mhz")):
                xs, ys = _series(hot, key, t0)
                marks = ax.scatter(xs, ys, marker="x", color="red", s=28, zorder=3)
                marks.set_gid(f"throttled:{node}")
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        ax.set_ylabel(("fan duty (%)" if fan == "fan_duty_pct" else "fan (rpm)") if key == "fan" else label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("seconds since the first sample")
    if len(samples) <= LEGEND_MAX:
        axes[0].legend(loc="upper left", fontsize="small", ncol=min(len(samples), 6))
    state = job.state
    marked = f"throttled (×): {', '.join(throttled_nodes)}" if throttled_nodes else "no throttling"
    fig.suptitle(f"{job.id} ({job.kind}, {state}) · {len(samples)} node(s) · {marked}", fontsize="medium")
    return fig


def write_png(job: JobRecord, path: str) -> None:
    fig = build_figure(job)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}; pass -o with a writable file") from None
