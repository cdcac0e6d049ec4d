"""What bench/dispatch.py and bench/ingest.py share: a private Mosquitto sized for a thousand sessions, a
``picluster-agent sim-fleet`` process, CPU time from /proc, the machine's load, and percentiles.

Every process started here is a plain ``Popen`` the caller stops by PID (``stop``); children die with the
benchmark (PR_SET_PDEATHSIG) even when it is killed with -9.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.fleet_cli import snapshot  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Topics  # noqa: E402
from nodeagent.security.keys import SigningKey  # noqa: E402
from scripts.localcluster import free_port, open_to_jobs, sim_jobs_config, stop, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
FDS_PER_NODE = 8  # the broker: one socket; the fleet: a socket, the spool's three files, a job's pipes


class BenchError(Exception):
    """Something the benchmark needs is missing or died; the message says what and how to fix it."""


def die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark itself dies, so nothing outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def raise_nofile(nodes: int) -> int:
    """Raise this process's open-file limit (children inherit it) for ``nodes`` sessions; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 1024 + FDS_PER_NODE * nodes))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 256 + FDS_PER_NODE * nodes:
        raise BenchError(f"open files: the hard limit {hard} is too low for {nodes} nodes; raise it (ulimit -Hn)")
    return want


@dataclass
class Mosquitto:
    """A private broker on a free loopback port. The settings that matter at scale are spelled out."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def broker(self) -> Broker:
        return Broker.parse(self.url)

    def config(self) -> str:
        return "\n".join(
            (
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "set_tcp_nodelay true",  # else ~40 ms of Nagle per small request/response
                "persistence false",
                "max_connections -1",  # no cap on sessions (the default, said out loud)
                "max_queued_messages 100000",  # as systemd/mosquitto/picluster.conf ships it
                "sys_interval 1",  # $SYS counters every second (bench/ingest.py reads them)
                f"log_dest file {self.workdir / 'mosquitto.log'}",
                "",
            )
        )

    def start(self) -> None:
        self.port = self.port or free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=5)
            self.proc = None


@dataclass
class Fleet:
    """One ``picluster-agent sim-fleet`` process: nodes sim<first> .. sim<first + count - 1>."""

    count: int
    cluster: str
    url: str
    workdir: Path
    tick_s: float = 1.0
    threads: int = 1
    template: str = "noop=true"
    python: str = sys.executable
    first: int = 1
    security: str = ""  # an agent config's [security] table (operator_key's), else none: unsigned commands
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        state = self.workdir / self.cluster
        state.mkdir(parents=True, exist_ok=True)
        open_to_jobs(state)  # the nodes' jobs run as SIM_JOBS_USER, never root
        conf = self.workdir / f"fleet-{self.cluster}-{self.first}.toml"
        # The power budget's driver named, as packaging/agent.toml advises: with "auto" every node follows every
        # node's facts to find it, N² messages after each reconnect, which a 1,050-node fleet in one process
        # cannot keep up with (BENCHMARKS.md, dispatch).
        power = '[policy.power]\ndriver = "sim1"\n'
        conf.write_text("[jobs]\n" + sim_jobs_config() + self.security + power)
        log = open(self.log, "wb")  # noqa: SIM115 (kept open for the child)
        argv = [
            *(self.python, "-m", "nodeagent", "sim-fleet", "--count", str(self.count), "--first", str(self.first)),
            *("--broker", self.url, "--cluster", self.cluster, "--state-dir", str(state), "--config", str(conf)),
            *("--tick-s", str(self.tick_s), "--threads", str(self.threads), "--template", self.template),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=REPO, preexec_fn=die_with_parent)
        log.close()

    def wait_ready(self, broker: Broker, timeout_s: float) -> float:
        return wait_ready([self], broker, timeout_s)

    @property
    def log(self) -> Path:
        return self.workdir / f"fleet-{self.cluster}-{self.first}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=60)
            self.proc = None


def operator_key(work: Path, *, require_signed: bool = True) -> tuple[Path, str]:
    """A throwaway operator key: the private key file piclusterctl signs with (``PICLUSTER_KEY``), and the agent
    config's [security] table that trusts it (and requires every command signed, as the .deb does, by default)."""
    key = SigningKey.generate("bench")
    key.save(work / "bench.key")
    keys_dir = work / "operators.d"
    keys_dir.mkdir(exist_ok=True)
    (keys_dir / "bench.pub").write_text(key.public.line("bench@fleetbench") + "\n")
    flag = "true" if require_signed else "false"
    return work / "bench.key", f'[security]\nrequire_signed = {flag}\noperator_keys_dir = "{keys_dir}"\n'


def fleets(count: int, processes: int, cluster: str, url: str, workdir: Path, **options: Any) -> list[Fleet]:
    """``count`` nodes (sim1 ..) split over ``processes`` sim-fleet processes, in order."""
    sizes = [count // processes + (i < count % processes) for i in range(processes)]
    firsts = [1 + sum(sizes[:i]) for i in range(processes)]
    pairs = zip(sizes, firsts, strict=True)
    return [Fleet(size, cluster, url, workdir, first=first, **options) for size, first in pairs]


def wait_ready(procs: Sequence[Fleet], broker: Broker, timeout_s: float) -> float:
    """Seconds until every node of ``procs`` is online with telemetry (it ticked: its health gate has a sample)."""
    started, count, cluster = time.monotonic(), sum(p.count for p in procs), procs[0].cluster
    while True:
        for p in procs:
            if p.proc is not None and p.proc.poll() is not None:
                raise BenchError(f"sim-fleet exited with {p.proc.returncode}; see {p.log}")
        with contextlib.suppress(Exception):
            fleet = snapshot(broker, Topics(cluster))
            ready = [v for v in fleet.nodes.values() if v.online and v.telemetry is not None and v.facts]
            if len(ready) == count:
                return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"{count} nodes not all online within {timeout_s:g} s; see {procs[0].log}")
        time.sleep(0.5)


def time_runs(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float], list[str]]:
    """Wall seconds of ``runs`` whole processes, the load at each, and the failures (exit status, output's tail)."""
    walls, loads, failures = [], [], []
    for _ in range(runs):
        loads.append(load())
        t0 = time.perf_counter()
        cwd = env.get("PICLUSTER_BENCH_CTL", str(REPO))  # `python -m` imports from its working directory first
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            failures.append(f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return walls, loads, failures


@contextlib.contextmanager
def workspace(name: str, controller_from: str | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary directory, removed afterwards, and the environment piclusterctl runs in (its history in it).
    ``controller_from``: another checkout whose piclusterctl is timed (before and after a change); the fleet
    stays this one's."""
    work = Path(tempfile.mkdtemp(prefix=f"picluster-bench-{name}-"))
    ctl = str(Path(controller_from).resolve()) if controller_from else str(REPO)
    try:
        yield work, {**os.environ, "PYTHONPATH": ctl, "PICLUSTER_BENCH_CTL": ctl, "XDG_DATA_HOME": str(work / "xdg")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(text: str, result: dict[str, Any], json_path: str | None) -> None:
    """The markdown table on stdout, every figure in ``json_path``."""
    print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reaped_cpu_s(pid: int) -> float:
    """cutime + cstime: what the process's reaped children used (sshd's sessions)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core; /proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class OthersMeter:
    """The CPU that processes other than ours used over a window, in cores: the machine's busy time minus what
    ``ours()`` (CPU seconds of the processes under test) says. The load average cannot say this: a fleet's job
    threads and clush's ssh processes raise it themselves."""

    def __init__(self, ours: Any) -> None:
        self.ours = ours
        self.t0, self.busy0, self.ours0 = time.monotonic(), machine_busy_s(), ours()

    def cores(self) -> float:
        elapsed = time.monotonic() - self.t0
        return max(0.0, (machine_busy_s() - self.busy0) - (self.ours() - self.ours0)) / elapsed if elapsed else 0.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least ``pct`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    debian = ""
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "cpu": model,
        "arch": platform.machine(),
        "kernel": platform.release(),
        "debian": debian,
        "python": f"{platform.python_version()} ({sys.executable})",
        "paho": _paho(),
        "mosquitto": mosq[0] if mosq else "?",
    }


def controller_source(controller_from: str | None) -> str:
    """Which piclusterctl is timed: its checkout and commit."""
    where = Path(controller_from).resolve() if controller_from else REPO
    rev = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return f"{where} at {rev.stdout.strip() or '?'}"


def _paho() -> str:
    import paho.mqtt

    return str(paho.mqtt.__version__)


def load() -> float:
    return os.getloadavg()[0]
