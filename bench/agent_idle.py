#!/usr/bin/env python3
"""Idle cost of one picluster-agent next to prometheus-node-exporter, measured side by side in one run.

Starts a private Mosquitto on a free loopback port, one ``picluster-agent run --sim`` connected to it, a
``mosquitto_sub`` that counts the agent's real telemetry messages, and ``prometheus-node-exporter`` scraped over
HTTP at the agent's tick rate. After a warm-up it samples, for both processes, RSS (VmRSS, every second) and CPU
time over the window (utime+stime from /proc/PID/stat, and the process CPU clock, which has nanosecond resolution
where /proc/PID/stat has 10 ms). It prints a markdown table and, with ``--json``, writes the raw numbers.

Every process it starts is stopped by PID in a ``finally`` (SIGTERM, then SIGKILL), also on Ctrl-C or an error,
and an alarm bounds the whole run to ``--seconds`` + 30 s. Standard library only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.localcluster import free_port, mosquitto_conf  # noqa: E402

NODE, CLUSTER = "bench", "bench"
TELEMETRY_TOPIC = f"picluster/v1/{CLUSTER}/node/{NODE}/telemetry"
SUB_WINDOW_S = 10.0
READY_TIMEOUT_S = 10.0
STOP_GRACE_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RSS_MIB = 30.0
TARGET_CPU_MS = 2.0


class BenchError(Exception):
    """Something the benchmark needs is missing or died; the message says what and how to fix it."""


# --- processes -------------------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark itself is killed (-9), so nothing outlives it even then."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Started:
    """The processes this run started, in start order, with their log files."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        try:
            # A session of its own: Ctrl-C reaches only this script, which then stops the children in order.
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **kwargs,
            )
        finally:
            out.close()
        self.procs[name], self.logs[name] = proc, log
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace")[-800:]
                raise BenchError(f"{name} (pid {proc.pid}) exited with status {proc.returncode}:\n{tail}")

    def stop(self, names: list[str]) -> None:
        """SIGTERM ``names`` together, wait up to STOP_GRACE_S, SIGKILL what is left, reap all."""
        procs = [self.procs[n] for n in names if n in self.procs]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        # The agent first, while the broker is still up to take its clean "offline".
        self.stop(["agent", "node_exporter"])
        self.stop(list(self.procs))


def wait_for(what: str, ready: Callable[[], bool], started: Started, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        started.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def scrape(url: str) -> int:
    """One scrape, like Prometheus's but uncompressed; returns the body's size in bytes."""
    with urllib.request.urlopen(url, timeout=5.0) as resp:
        return len(resp.read())


def try_scrape(url: str) -> bool:
    try:
        return scrape(url) > 0
    except OSError:
        return False


# --- /proc -----------------------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def stat_cpu_s(pid: int) -> float:
    """utime + stime from /proc/PID/stat (all threads, dead ones too), in seconds; 1/CLK_TCK resolution."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def clock_cpu_s(pid: int) -> float:
    """The process's CPU clock (what clock_getcpuclockid() returns): the same total, in nanoseconds."""
    return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the whole thread group


@dataclass
class Mark:
    """Cumulative counters at one instant of the measured window."""

    wall: float
    agent_stat_s: float
    agent_clock_s: float
    ne_stat_s: float
    ne_clock_s: float
    scrapes: int


def mark(agent: int, ne: int, scrapes: int) -> Mark:
    return Mark(time.time(), stat_cpu_s(agent), clock_cpu_s(agent), stat_cpu_s(ne), clock_cpu_s(ne), scrapes)


# --- telemetry subscription ------------------------------------------------------------------------------------
def read_sub(path: Path) -> list[tuple[float, int]]:
    """``(receive time, payload bytes)`` of every live (not retained) telemetry message mosquitto_sub wrote."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "0":
            out.append((float(parts[0]), int(parts[2])))
    return out


def count_in(messages: list[tuple[float, int]], start: float, end: float) -> int:
    return sum(1 for t, _ in messages if start <= t < end)


# --- facts about the machine and the agent's interpreter -------------------------------------------------------
def run_text(argv: list[str], **kwargs: Any) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (done.stdout or done.stderr).strip()


def machine_info(python: str, env: dict[str, str], tools: dict[str, str]) -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    probe = (  # the paho the agent imports: same interpreter, same PYTHONPATH, same working directory
        "import sys, paho.mqtt, msgpack\n"
        "print(sys.version.split()[0], paho.mqtt.__version__, '.'.join(map(str, msgpack.version)))"
    )
    answer = run_text([python, "-c", probe], env=env, cwd=REPO)
    try:
        py_version, paho, msgpack = answer.split()
    except ValueError:
        raise BenchError(f"{python} cannot import what the agent needs:\n{answer}") from None
    return {
        "nproc": run_text(["nproc"]),
        "cpu_model": model,
        "kernel": platform.release(),
        "agent_python": python,
        "agent_python_version": py_version,
        "paho_mqtt": paho,
        "msgpack": msgpack,
        "mosquitto": run_text([tools["mosquitto"], "-h"]).splitlines()[0],
        "node_exporter": run_text([tools["node_exporter"], "--version"]).splitlines()[0],
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }


def find_tools(node_exporter: str) -> dict[str, str]:
    tools = {
        "mosquitto": shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin"),
        "node_exporter": shutil.which(node_exporter),
        "mosquitto_sub": shutil.which("mosquitto_sub"),
    }
    if not tools["mosquitto"]:
        raise BenchError("mosquitto not found: apt-get install -y mosquitto")
    if not tools["node_exporter"]:
        raise BenchError(f"{node_exporter} not found: apt-get install -y prometheus-node-exporter")
    return tools  # type: ignore[return-value]


# --- the run ---------------------------------------------------------------------------------------------------
def start_all(
    args: argparse.Namespace, tools: dict[str, str], tmp: Path, env: dict[str, str], started: Started
) -> dict[str, Any]:
    """Broker, subscriber, agent, node_exporter; returns once the agent publishes and node_exporter answers."""
    mqtt_port = free_port()
    while (ne_port := free_port()) == mqtt_port:
        pass
    conf = tmp / "mosquitto.conf"
    conf.write_text(mosquitto_conf(mqtt_port))
    started.start("mosquitto", [tools["mosquitto"], "-c", str(conf)], tmp / "mosquitto.log")
    wait_for("mosquitto", lambda: port_open(mqtt_port), started)
    sub_out = tmp / "telemetry.txt"
    if tools["mosquitto_sub"]:  # one line per message ("<unix time> <retained> <bytes>"), flushed per message
        argv = [tools["mosquitto_sub"], *f"-h 127.0.0.1 -p {mqtt_port} -t {TELEMETRY_TOPIC} -F".split(), "%U %r %l"]
        started.start("mosquitto_sub", argv, sub_out)
    agent_toml = tmp / "agent.toml"
    agent_toml.write_text(f"[agent]\ntick_s = {args.tick_s!r}\n")
    flags = f"--sim --node-id {NODE} --cluster {CLUSTER} --broker mqtt://127.0.0.1:{mqtt_port}"
    agent_argv = [args.python, "-m", "nodeagent", "run", *flags.split(), "--state-dir", str(tmp / "state")]
    agent_argv += ["--config", str(agent_toml)]
    started.start("agent", agent_argv, tmp / "agent.log", env=env, cwd=REPO)
    ne_url = f"http://127.0.0.1:{ne_port}/metrics"
    started.start(
        "node_exporter",
        [tools["node_exporter"], f"--web.listen-address=127.0.0.1:{ne_port}"],
        tmp / "node_exporter.log",
    )
    if tools["mosquitto_sub"]:
        wait_for("agent telemetry", lambda: bool(read_sub(sub_out)), started)
    wait_for("node_exporter", lambda: try_scrape(ne_url), started)
    return {"agent_argv": agent_argv, "ne_url": ne_url, "sub_out": sub_out}


def measure(args: argparse.Namespace, started: Started, ne_url: str) -> dict[str, Any]:
    """Warm up, then sample RSS every second and scrape every tick for ``--seconds``; returns the raw series."""
    agent, ne = started.procs["agent"].pid, started.procs["node_exporter"].pid
    warm_end = time.monotonic() + args.warmup_s
    while time.monotonic() < warm_end:  # the peer warms up under the same load it is measured under
        started.check_alive()
        scrape(ne_url)
        time.sleep(max(0.0, min(args.tick_s, warm_end - time.monotonic())))
    raw: dict[str, Any] = {"agent_rss_kib": [], "ne_rss_kib": [], "scrape_bytes": [], "marks": []}
    start = time.monotonic()
    end, next_scrape, next_rss, next_mark = start + args.seconds, start, start, start + SUB_WINDOW_S
    raw["marks"].append(mark(agent, ne, 0))
    while (now := time.monotonic()) < end:
        if now >= next_scrape:
            raw["scrape_bytes"].append(scrape(ne_url))
            next_scrape += args.tick_s * max(1, int((now - next_scrape) // args.tick_s) + 1)
        if now >= next_rss:
            raw["agent_rss_kib"].append(rss_kib(agent))
            raw["ne_rss_kib"].append(rss_kib(ne))
            next_rss += 1.0
        if now >= next_mark:
            if end - now > 0.5:  # the last boundary is the final mark below
                raw["marks"].append(mark(agent, ne, len(raw["scrape_bytes"])))
            next_mark += SUB_WINDOW_S
        started.check_alive()
        time.sleep(max(0.0, min(next_scrape, next_rss, next_mark, end) - time.monotonic()))
    raw["marks"].append(mark(agent, ne, len(raw["scrape_bytes"])))
    return raw


# --- figures ---------------------------------------------------------------------------------------------------
def per_event_ms(cpu_s: float, events: float) -> float | None:
    return cpu_s * 1000.0 / events if events else None


def windows(marks: list[Mark]) -> list[tuple[Mark, Mark]]:
    """Consecutive pairs of marks that span a full sub-window (a short tail is left to the whole-window figure)."""
    return [(a, b) for a, b in itertools.pairwise(marks) if b.wall - a.wall >= SUB_WINDOW_S - 0.5]


def summarize(raw: dict[str, Any], messages: list[tuple[float, int]] | None, tick_s: float) -> dict[str, Any]:
    """Medians, maxima, CPU per tick/scrape and ratios from the raw series."""
    marks: list[Mark] = raw["marks"]
    first, last = marks[0], marks[-1]

    def ticks(a: Mark, b: Mark) -> float:  # real messages when we could count them, else the wall clock's count
        return count_in(messages, a.wall, b.wall) if messages is not None else (b.wall - a.wall) / tick_s

    agent = _side(
        raw["agent_rss_kib"],
        last.agent_stat_s - first.agent_stat_s,
        last.agent_clock_s - first.agent_clock_s,
        ticks(first, last),
        [per_event_ms(b.agent_clock_s - a.agent_clock_s, ticks(a, b)) for a, b in windows(marks)],
        [n for _, n in messages or []],
    )
    ne = _side(
        raw["ne_rss_kib"],
        last.ne_stat_s - first.ne_stat_s,
        last.ne_clock_s - first.ne_clock_s,
        last.scrapes,
        [per_event_ms(b.ne_clock_s - a.ne_clock_s, b.scrapes - a.scrapes) for a, b in windows(marks)],
        raw["scrape_bytes"],
    )
    ratios = {key: _ratio(agent[key], ne[key]) for _, key, _ in ROWS if key != "events"}
    return {"window_s": last.wall - first.wall, "agent": agent, "node_exporter": ne, "ratio": ratios}


def _side(
    rss: list[int], stat_s: float, clock_s: float, events: float, window_ms: list[float | None], sizes: list[int]
) -> dict[str, Any]:
    """One process's figures: RSS in MiB, CPU per tick (or scrape) in ms, bytes per tick (or scrape)."""
    valid = [v for v in window_ms if v is not None]
    return {
        "rss_median_mib": statistics.median(rss) / 1024,
        "rss_max_mib": max(rss) / 1024,
        "events": events,
        "cpu_stat_ms_per_event": per_event_ms(stat_s, events),
        "cpu_clock_ms_per_event": per_event_ms(clock_s, events),
        "window_ms_per_event": window_ms,
        "window_median_ms": statistics.median(valid) if valid else None,
        "window_max_ms": max(valid) if valid else None,
        "bytes_per_event": statistics.median(sizes) if sizes else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


ROWS = (  # (label, key, digits)
    ("steady RSS, median (MiB)", "rss_median_mib", 1),
    ("steady RSS, max (MiB)", "rss_max_mib", 1),
    ("CPU per tick / scrape, /proc/PID/stat (ms)", "cpu_stat_ms_per_event", 2),
    ("CPU per tick / scrape, process CPU clock (ms)", "cpu_clock_ms_per_event", 3),
    ("CPU per tick / scrape, median of 10 s windows (ms)", "window_median_ms", 3),
    ("CPU per tick / scrape, worst 10 s window (ms)", "window_max_ms", 3),
    ("ticks / scrapes in the window", "events", 0),
    ("bytes per tick / scrape (median)", "bytes_per_event", 0),
)


def render(report: dict[str, Any]) -> str:
    m, fig = report["machine"], report["figures"]
    agent, ne, ratio = fig["agent"], fig["node_exporter"], fig["ratio"]
    lines = [
        f"command: `{report['command']}`",
        f"date: {m['date_utc']}; window {fig['window_s']:.1f} s after a {report['warmup_s']:.0f} s warm-up, "
        f"tick {report['tick_s']} s",
        f"machine: {m['nproc']} cores, {m['cpu_model']}, Linux {m['kernel']}; load average "
        f"{' '.join(m['loadavg_before'])} before, {' '.join(m['loadavg_after'])} after",
        f"agent: Python {m['agent_python_version']} ({m['agent_python']}), paho-mqtt {m['paho_mqtt']}, "
        f"msgpack {m['msgpack']}; --sim",
        f"peer: {m['node_exporter']}; broker: {m['mosquitto']}",
        f"ticks counted from: {report['tick_source']}",
        "",
        "| | picluster-agent | node_exporter | agent / node_exporter |",
        "|---|---:|---:|---:|",
    ]
    for label, key, digits in ROWS:
        lines.append(
            f"| {label} | {_fmt(agent[key], digits)} | {_fmt(ne[key], digits)} | {_fmt_ratio(ratio.get(key))} |"
        )
    win = ", ".join(_fmt(v, 3) for v in agent["window_ms_per_event"])
    lines += [
        "",
        f"agent CPU per tick in each 10 s window (ms): {win}",
        f"node_exporter CPU per scrape in each 10 s window (ms): "
        f"{', '.join(_fmt(v, 2) for v in ne['window_ms_per_event'])}",
        "",
    ]
    rss_ok = agent["rss_median_mib"] <= TARGET_RSS_MIB
    cpu = agent["cpu_clock_ms_per_event"]
    cpu_ok = cpu is not None and cpu <= TARGET_CPU_MS
    lines.append(
        f"targets: agent RSS <= {TARGET_RSS_MIB:.0f} MiB: {'met' if rss_ok else 'MISSED'}; "
        f"agent CPU <= {TARGET_CPU_MS:.0f} ms per tick: {'met' if cpu_ok else 'MISSED'}"
    )
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60, at least 10)")
    parser.add_argument("--tick-s", type=float, default=1.0, help="agent tick and scrape interval (default 1.0)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="warm-up before measuring (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the agent (default: this)")
    parser.add_argument("--node-exporter", default="/usr/bin/prometheus-node-exporter", metavar="PATH")
    args = parser.parse_args(argv)
    if args.seconds < SUB_WINDOW_S or args.tick_s <= 0 or not 0 <= args.warmup_s <= 10:
        parser.error("need --seconds >= 10, --tick-s > 0 and 0 <= --warmup-s <= 10")
    # The agent starts in the repository root: resolve a relative --python (.venv/bin/python) from here.
    args.python = os.path.abspath(shutil.which(args.python) or args.python)
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("time limit (--seconds + 30 s) reached" if signum == signal.SIGALRM else "SIGTERM")


def bench(args: argparse.Namespace, started: Started, tmp: Path) -> dict[str, Any]:
    tools = find_tools(args.node_exporter)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    machine = machine_info(args.python, env, tools)
    run = start_all(args, tools, tmp, env, started)
    raw = measure(args, started, run["ne_url"])
    machine["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    messages = read_sub(run["sub_out"]) if tools["mosquitto_sub"] else None
    tick_source = (
        f"live messages on {TELEMETRY_TOPIC} (mosquitto_sub)"
        if messages is not None
        else "the wall clock (window / tick) because mosquitto_sub is missing: apt-get install -y mosquitto-clients"
    )
    return {
        "command": shlex.join(["python3", *sys.argv]),
        "machine": machine,
        "tick_s": args.tick_s,
        "warmup_s": args.warmup_s,
        "seconds": args.seconds,
        "tick_source": tick_source,
        "agent_argv": run["agent_argv"],
        "figures": summarize(raw, messages, args.tick_s),
        "raw": {**raw, "marks": [vars(m) for m in raw["marks"]], "telemetry": messages if messages is not None else []},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)
    # Hard bound: start-up, warm-up and window must end in time for the stop (2 x STOP_GRACE_S) to finish too.
    signal.alarm(int(args.seconds) + 30 - int(2 * STOP_GRACE_S) - 1)
    started = Started()
    try:
        with tempfile.TemporaryDirectory(prefix="picluster-bench-") as tmp:
            try:
                report = bench(args, started, Path(tmp))
            finally:
                signal.alarm(0)
                # A second Ctrl-C must not cut the clean-up short.
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                started.stop_all()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    except (BenchError, OSError) as exc:
        print(f"agent_idle: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"agent_idle: stopped early ({str(exc) or 'Ctrl-C'}); everything it started is stopped", file=sys.stderr)
        return 130
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
