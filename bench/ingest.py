#!/usr/bin/env python3
"""Controller ingest: a fleet of simulated nodes publishing telemetry at 1 Hz, and what the broker and
``piclusterctl`` make of it.

    python3 bench/ingest.py [--sizes 250,1050] [--window-s 30] [--runs 20] [--json FILE]

For each N: one private Mosquitto (fresh, so its counters start at zero; ``set_tcp_nodelay``, ``sys_interval 1``)
and one ``picluster-agent sim-fleet --count N --tick-s 1``. Once every node is online and ticking:

1. the broker's CPU over ``--window-s`` (utime+stime from /proc/PID/stat) with no viewer, then again with one
   viewer following every node's telemetry (what ``piclusterctl top`` or a dashboard does): CPU per node, and the
   node count one core would hold;
2. during the second window, the viewer's receive lag (its clock at arrival minus the sample's ``t``) in 10 s
   slices, and the broker's ``$SYS`` counters (messages stored, dropped, received, sent): no backlog means the lag
   and the store stay flat and nothing is dropped;
3. ``--runs`` whole ``piclusterctl nodes`` processes (the table, as an operator runs it) and ``--runs`` of
   ``piclusterctl run noop --nodes all``, while the telemetry keeps coming.

Everything it starts is stopped by PID on the way out. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleetbench import (
    BenchError,
    Fleet,
    Mosquitto,
    OthersMeter,
    controller_source,
    cpu_s,
    load,
    machine,
    publish,
    raise_nofile,
    rss_mb,
    summary,
    time_runs,
    workspace,
)

from controller.session import Session
from nodeagent.errors import ProtocolError
from nodeagent.protocol import Telemetry, Topics, decode

SYS_TOPICS = (
    "$SYS/broker/store/messages/count",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/clients/connected",
)
SLICE_S = 10.0
NODES_GOAL_S = 1.0


class Viewer:
    """A session following every node's telemetry and the broker's $SYS counters; lag in time slices."""

    def __init__(self, broker: Mosquitto, cluster: str) -> None:
        self.topics = Topics(cluster)
        self.session = Session(broker.broker, cluster, subscriptions=(self.topics.all_nodes("telemetry"), *SYS_TOPICS))
        self.lags: list[list[float]] = []
        self.phase = "steady"
        self.phases: list[str] = []  # the phase each slice of lags belongs to
        self.sys: dict[str, list[tuple[float, str]]] = {t: [] for t in SYS_TOPICS}
        self.bad = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._slice_end = 0.0

    def __enter__(self) -> Viewer:
        self.session.__enter__()
        self._slice_end = time.monotonic() + SLICE_S
        self.lags.append([])
        self.phases.append(self.phase)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.session.__exit__(*exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.session.get(0.2)
            now = time.monotonic()
            if now >= self._slice_end:
                self._slice_end += SLICE_S
                self.lags.append([])
                self.phases.append(self.phase)
            if msg is None:
                continue
            if msg.topic in self.sys:
                self.sys[msg.topic].append((time.time(), msg.payload.decode(errors="replace")))
                continue
            if msg.retained:
                continue  # the snapshot at subscribe time, not a live sample
            try:
                sample = decode(msg.payload, Telemetry)
            except ProtocolError:
                self.bad += 1
                continue
            self.lags[-1].append(time.time() - sample.t)


def broker_window(broker: Mosquitto, window_s: float) -> float:
    """The broker's CPU seconds per second over the window."""
    assert broker.proc is not None
    c0, t0 = cpu_s(broker.proc.pid), time.monotonic()
    time.sleep(window_s)
    return (cpu_s(broker.proc.pid) - c0) / (time.monotonic() - t0)


def bench_size(n: int, args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    broker = Mosquitto(work)
    cluster = f"ingest{n}"
    broker.start()
    fleet = Fleet(n, cluster, broker.url, work, tick_s=1.0, threads=args.threads)
    try:
        fleet.start()
        fleet.wait_ready(broker.broker, timeout_s=120 + n / 10)
        time.sleep(2.0)  # the first ticks, spread over one second, are all out
        assert broker.proc is not None
        ours = OthersMeter(lambda: cpu_s(fleet.pid) + cpu_s(broker.proc.pid) + cpu_s(os.getpid()))  # type: ignore[union-attr]
        fleet_c0, t0 = cpu_s(fleet.pid), time.monotonic()
        idle = broker_window(broker, args.window_s)
        fleet_per_s = (cpu_s(fleet.pid) - fleet_c0) / (time.monotonic() - t0)
        with Viewer(broker, cluster) as viewer:
            viewed = broker_window(broker, args.window_s)
            others_cores = ours.cores()  # over both windows; the piclusterctl runs below are ours too
            viewer.phase = "during the runs"  # the fleet runs 1,050 jobs at a time: its ticks come late, not queued
            base = [sys.executable, "-m", "controller.cli", "--broker", broker.url, "--cluster", cluster]
            nodes_s, _, nodes_failed = time_runs([*base, "nodes"], args.runs, env)
            run_s, _, run_failed = time_runs([*base, "run", "noop", "--nodes", "all"], args.runs, env)
        slices = [(p, s) for p, s in zip(viewer.phases, viewer.lags, strict=True) if s]
        out = {
            "n": n,
            "broker_cpu_per_s": {"no viewer": idle, "one telemetry viewer": viewed},
            "broker_us_per_node_s": {"no viewer": idle / n * 1e6, "one telemetry viewer": viewed / n * 1e6},
            "nodes_one_core_holds": {"no viewer": n / idle if idle else None, "one telemetry viewer": n / viewed},
            "broker_rss_mb": rss_mb(broker.proc.pid),
            "fleet_cpu_per_s": fleet_per_s,
            "fleet_rss_mb": rss_mb(fleet.pid),
            "viewer_lag_ms_by_slice": [
                {
                    "phase": p,
                    "messages": len(s),
                    "median": statistics.median(s) * 1000,
                    "p99": sorted(s)[int(0.99 * (len(s) - 1))] * 1000,
                }
                for p, s in slices
            ],
            "viewer_messages_per_s": sum(len(s) for p, s in slices if p == "steady")
            / max(1, sum(p == "steady" for p, _ in slices))
            / SLICE_S,
            "viewer_bad": viewer.bad,
            "sys": {t.rsplit("/", 2)[-2] + "/" + t.rsplit("/", 1)[-1]: v for t, v in viewer.sys.items()},
            "nodes_s": summary(nodes_s),
            "nodes_failures": nodes_failed,
            "run_s": summary(run_s),
            "run_failures": run_failed,
            "load": load(),
            "others_cores": others_cores,
        }
    finally:
        fleet.stop()
        broker.stop()
    return out


def flat(series: list[tuple[float, str]]) -> str:
    values = [v for _, v in series]
    return f"{values[0]} → {values[-1]}" if values else "n/a"


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# ingest benchmark, {m['date_utc']} UTC, {m['cores']} cores {m['arch']}, Python {m['python']}, "
        f"paho-mqtt {m['paho']}, {m['mosquitto']}",
        f"piclusterctl from {result['controller']}",
        "",
        "| N at 1 Hz | broker CPU, no viewer | with a telemetry viewer | µs/node/s (viewer) | one core holds | "
        "viewer msgs/s | stored msgs | dropped | `nodes` median / p99 | `run noop` median / p99 | fleet CPU | "
        "others' CPU |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in result["sizes"]:
        cpu, per = r["broker_cpu_per_s"], r["broker_us_per_node_s"]["one telemetry viewer"]
        lines.append(
            f"| {r['n']} | {cpu['no viewer'] * 100:.1f} % | {cpu['one telemetry viewer'] * 100:.1f} % | {per:.0f} | "
            f"{r['nodes_one_core_holds']['one telemetry viewer']:,.0f} | {r['viewer_messages_per_s']:.0f} | "
            f"{flat(r['sys']['messages/count'])} | {flat(r['sys']['messages/dropped'])} | "
            f"{r['nodes_s']['median'] * 1000:.0f} / {r['nodes_s']['p99'] * 1000:.0f} ms | "
            f"{r['run_s']['median'] * 1000:.0f} / {r['run_s']['p99'] * 1000:.0f} ms | "
            f"{r['fleet_cpu_per_s'] * 100:.0f} % | {r['others_cores']:.2f} cores |"
        )
    lines += ["", "| N | viewer lag by 10 s slice: median / p99 (ms), messages |", "|---:|---|"]
    for r in result["sizes"]:
        cells = [
            f"{s['phase']}: {s['median']:.1f} / {s['p99']:.1f} ({s['messages']})" for s in r["viewer_lag_ms_by_slice"]
        ]
        lines.append(f"| {r['n']} | " + "; ".join(cells) + " |")
    for r in result["sizes"]:
        for failure in (r["nodes_failures"] + r["run_failures"])[:3]:
            lines.append(f"\nfailure at N={r['n']}: {failure}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250,1050", help="fleet sizes N (comma-separated)")
    ap.add_argument("--window-s", type=float, default=30.0, help="each CPU window")
    ap.add_argument("--runs", type=int, default=20, help="whole piclusterctl processes of each kind")
    ap.add_argument("--threads", type=int, default=1, help="the fleet's logic threads")
    ap.add_argument("--controller-from", metavar="DIR", help="time the piclusterctl of this checkout (e.g. main)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    raise_nofile(max(sizes))
    result: dict[str, Any] = {"machine": machine(), "sizes": [], "args": vars(args)}
    result["controller"] = controller_source(args.controller_from)
    with workspace("ingest", args.controller_from) as (work, env):
        try:
            for n in sizes:
                print(f"N={n} ...", file=sys.stderr, flush=True)
                result["sizes"].append(bench_size(n, args, work, env))
        except BenchError as exc:
            print(f"ingest: {exc}", file=sys.stderr)
            return 1
    publish(report(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
