#!/usr/bin/env python3
"""Dispatch benchmark: the whole-process time of ``piclusterctl run <light template> --nodes all`` until every
node finished, for fleets of N simulated nodes, next to ``clush`` and ``pdsh`` running ``true`` over ssh.

    python3 bench/dispatch.py [--sizes 10,50,100,250,1050] [--runs 20] [--ssh-sizes 10,50,100] [--json FILE]

One private Mosquitto (``set_tcp_nodelay true``, the open-file limit raised for the sessions), then for each N
one ``picluster-agent sim-fleet --count N`` process (every node the real agent: it decodes, admits, runs
``true`` as a job and reports it). Once every node is online and has ticked, one warm-up run, then ``--runs``
timed runs of the whole ``piclusterctl`` process, interpreter start included; each must exit 0 (every node
passed). It also reads the CPU time the fleet, the broker and the piclusterctl processes used over the series,
and the load average at each run. Then, in the same run, the peers: a private ``sshd`` on a free loopback port
(throwaway host and user keys in a temporary directory, ``node1..nodeN`` mapped to it by an ssh_config), and
``clush -w node[1-N] true`` and ``pdsh -R ssh -w node[1-N] true`` with their default fan-outs. Everything it
starts is stopped by PID on the way out. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleetbench import (
    BenchError,
    Mosquitto,
    OthersMeter,
    controller_source,
    cpu_s,
    die_with_parent,
    fleets,
    machine,
    operator_key,
    publish,
    raise_nofile,
    reaped_cpu_s,
    rss_mb,
    summary,
    threads_of,
    time_runs,
    wait_ready,
    workspace,
)

from controller.dispatch import NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, subscriptions
from controller.select import select
from controller.session import Session
from nodeagent.protocol import JobSpec, Topics
from scripts.localcluster import free_port, stop, wait_port

GOALS_S = {100: 0.150, 1050: 1.0}  # the p99 goals, whole process


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_picluster(
    n: int, runs: int, broker: Mosquitto, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    cluster = f"dispatch{n}p{args.fleets}"
    security = ""
    if args.signed:
        (work / f"{cluster}-key").mkdir()
        key_file, security = operator_key(work / f"{cluster}-key")  # one per fleet
        env = {**env, "PICLUSTER_KEY": str(key_file)}
        os.environ["PICLUSTER_KEY"] = str(key_file)  # the in-process phases sign too (controller/session.py)
    options = {"tick_s": args.tick_s, "threads": args.threads, "security": security}
    procs = fleets(n, min(args.fleets, n), cluster, broker.url, work, **options)
    argv = [sys.executable, "-m", "controller.cli", "--broker", broker.url, "--cluster", cluster]
    argv += ["run", "noop", "--nodes", "all"]
    assert broker.proc is not None
    try:
        for proc in procs:
            proc.start()
        ready_s = wait_ready(procs, broker.broker, timeout_s=120 + n / 10)
        time_runs(argv, 1, env)  # warm-up: every node's first job (its jobs directory, the page cache)
        fleet_cpu = sum(cpu_s(p.pid) for p in procs)
        broker_cpu, ctl_cpu = cpu_s(broker.proc.pid), children_cpu_s()
        others = OthersMeter(lambda: sum(cpu_s(p.pid) for p in procs) + cpu_s(broker.proc.pid) + children_cpu_s())
        t0 = time.monotonic()
        walls, loads, failures = time_runs(argv, runs, env)
        window = time.monotonic() - t0
        others_cores = others.cores()
        steps = phases(broker, cluster, args.phase_runs) if args.phase_runs and not args.controller_from else {}
        out = {
            "n": n,
            "fleet_processes": len(procs),
            "wall_s": summary(walls),
            "runs_s": [round(w, 4) for w in walls],
            "failures": failures,
            "load": summary(loads),
            "others_cores": others_cores,
            "phases_ms": steps,
            "fleet_cpu_s_per_run": (sum(cpu_s(p.pid) for p in procs) - fleet_cpu) / runs,
            "broker_cpu_s_per_run": (cpu_s(broker.proc.pid) - broker_cpu) / runs,
            "ctl_cpu_s_per_run": (children_cpu_s() - ctl_cpu) / runs,
            "window_s": window,
            "fleet_rss_mb": sum(rss_mb(p.pid) for p in procs),
            "fleet_threads": sum(threads_of(p.pid) for p in procs),
            "fleet_ready_s": ready_s,
        }
    finally:
        for proc in procs:
            proc.stop()
    return out


def phases(broker: Mosquitto, cluster: str, runs: int) -> dict[str, dict[str, float]]:
    """Where a run's time goes, measured inside one process (so without start-up): what ``run KIND`` does, step by
    step, to the moment every node has answered and to the moment every node has ended. Medians in ms."""
    topics = Topics(cluster)
    subs = (*subscriptions(topics, telemetry=False), topics.all_nodes("events"))
    steps: dict[str, list[float]] = {"connect": [], "snapshot": []}
    for what in ("first node answered", "first node ended", "every node answered", "every node ended"):
        steps[f"submit → {what}"] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with Session(broker.broker, cluster, subscriptions=subs) as session:
            t1 = time.perf_counter()
            view = Fleet(topics).feed(session.snapshot())
            nodes = [n for n in select("all", view.nodes) if view.nodes[n].online]
            t2 = time.perf_counter()
            answered: dict[str, float] = {}
            ended: dict[str, float] = {}
            job = JobSpec(id=new_job_id("noop"), kind="noop", timeout_s=60.0)
            submit_and_follow(session, job, nodes, on_change=partial(_seen, answered, ended))
            t3 = time.perf_counter()
        steps["connect"].append(t1 - t0)
        steps["snapshot"].append(t2 - t1)
        steps["submit → first node answered"].append(min(answered.values(), default=t2) - t2)
        steps["submit → first node ended"].append(min(ended.values(), default=t2) - t2)
        steps["submit → every node answered"].append(max(answered.values(), default=t2) - t2)
        steps["submit → every node ended"].append(t3 - t2)
    return {k: {"median": statistics.median(v) * 1000, "max": max(v) * 1000} for k, v in steps.items()}


def _seen(answered: dict[str, float], ended: dict[str, float], run: NodeRun) -> None:
    answered.setdefault(run.node, time.perf_counter())
    if run.ended:
        ended.setdefault(run.node, time.perf_counter())


def import_ms(env: dict[str, str], runs: int = 10) -> dict[str, float]:
    """Interpreter start, and the imports of ``run KIND`` on top of it (medians of whole processes)."""
    bare = [sys.executable, "-c", "pass"]
    imports = [sys.executable, "-c", "import controller.cli, controller.run_kinds"]
    return {
        "interpreter": statistics.median(time_runs(bare, runs, env)[0]) * 1000,
        "interpreter + imports": statistics.median(time_runs(imports, runs, env)[0]) * 1000,
    }


# --- the ssh peers ----------------------------------------------------------------------------------------------
class Sshd:
    """A private sshd on a free loopback port, keys and config in ``work``; stopped by PID."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ssh_config = work / "ssh_config"

    def start(self, max_nodes: int) -> None:
        for key in ("host_key", "user_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.work / key)], check=True, timeout=30
            )
        shutil.copy(self.work / "user_key.pub", self.work / "authorized_keys")
        (self.work / "sshd_config").write_text(
            "\n".join(
                (
                    f"ListenAddress 127.0.0.1:{self.port}",
                    f"HostKey {self.work / 'host_key'}",
                    f"AuthorizedKeysFile {self.work / 'authorized_keys'}",
                    f"PidFile {self.work / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the keys live in a temporary directory
                    "PrintMotd no",
                    # clush (fan-out 64) and pdsh (32) open that many connections at once; the default 10:30:100
                    # would drop some of them at random and measure retries.
                    f"MaxStartups {max(100, 2 * max_nodes)}",
                    "LogLevel ERROR",
                    "",
                )
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.work / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "sshd.log", "wb"),  # noqa: SIM115 (the child keeps it)
            preexec_fn=die_with_parent,
        )
        wait_port(self.port)
        self.ssh_config.write_text(
            "\n".join(
                (
                    "Host node*",
                    "  HostName 127.0.0.1",
                    f"  Port {self.port}",
                    f"  User {os.environ.get('USER') or 'root'}",
                    f"  IdentityFile {self.work / 'user_key'}",
                    "  IdentitiesOnly yes",
                    "  StrictHostKeyChecking no",
                    "  UserKnownHostsFile /dev/null",
                    "  BatchMode yes",
                    "  LogLevel ERROR",
                    "",
                )
            )
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=5)
            self.proc = None


def peer_argv(tool: str, n: int, ssh_config: Path) -> tuple[list[str], dict[str, str]]:
    nodes = f"node[1-{n}]"
    if tool == "clush":
        return ["clush", "-o", f"-F {ssh_config}", "-w", nodes, "true"], dict(os.environ)
    env = {**os.environ, "PDSH_SSH_ARGS_APPEND": f"-F {ssh_config}", "PDSH_RCMD_TYPE": "ssh"}
    return ["pdsh", "-R", "ssh", "-w", nodes, "true"], env


def bench_peer(tool: str, n: int, runs: int, sshd: Sshd) -> dict[str, Any]:
    argv, env = peer_argv(tool, n, sshd.ssh_config)
    time_runs(argv, 1, env)  # warm-up
    assert sshd.proc is not None
    pid = sshd.proc.pid
    ours = OthersMeter(lambda: children_cpu_s() + cpu_s(pid) + reaped_cpu_s(pid))
    c0 = children_cpu_s() + reaped_cpu_s(pid)
    walls, loads, failures = time_runs(argv, runs, env)
    return {
        "tool": tool,
        "n": n,
        "wall_s": summary(walls),
        "load": summary(loads),
        "others_cores": ours.cores(),
        "cpu_s_per_run": (children_cpu_s() + reaped_cpu_s(pid) - c0) / runs,  # the tool, ssh and sshd
        "failures": failures,
    }


# --- output ------------------------------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# dispatch benchmark, {m['date_utc']} UTC, {m['cores']} cores {m['arch']}, Python {m['python']}, "
        f"paho-mqtt {m['paho']}, {m['mosquitto']}",
        f"piclusterctl from {result['controller']}",
        "",
        "| N | fleet processes | piclusterctl median | p99 | max | goal (p99) | failed runs | fleet CPU/run | "
        "broker CPU/run | piclusterctl CPU/run | others' CPU | load (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["picluster"]:
        goal = GOALS_S.get(r["n"])
        verdict = "" if goal is None else f"{goal * 1000:.0f} ms {'met' if r['wall_s']['p99'] <= goal else 'MISSED'}"
        lines.append(
            f"| {r['n']} | {r['fleet_processes']} | {r['wall_s']['median'] * 1000:.0f} ms | "
            f"{r['wall_s']['p99'] * 1000:.0f} ms | "
            f"{r['wall_s']['max'] * 1000:.0f} ms | {verdict} | {len(r['failures'])}/{r['wall_s']['n']} | "
            f"{r['fleet_cpu_s_per_run']:.2f} s | {r['broker_cpu_s_per_run']:.3f} s | {r['ctl_cpu_s_per_run']:.2f} s | "
            f"{r['others_cores']:.2f} cores | {r['load']['median']:.1f} |"
        )
    if result.get("imports_ms"):
        imp = result["imports_ms"]
        lines += [
            "",
            f"Start-up of a piclusterctl process: interpreter {imp['interpreter']:.0f} ms, with the imports of "
            f"`run KIND` {imp['interpreter + imports']:.0f} ms (medians of 10).",
        ]
    with_phases = [r for r in result["picluster"] if r.get("phases_ms")]
    if with_phases:
        names = list(with_phases[0]["phases_ms"])
        lines += ["", "| N | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for r in with_phases:
            cells = [f"{r['phases_ms'][k]['median']:.1f} ms" for k in names]
            lines.append(f"| {r['n']} | " + " | ".join(cells) + " |")
    if result["peers"]:
        lines += [
            "",
            "| N | tool | median | p99 | failed runs | CPU/run (tool, ssh, sshd) | others' CPU | load (median) | "
            "piclusterctl median (tool ÷ ours) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ours = {r["n"]: r["wall_s"]["median"] for r in result["picluster"]}
        for p in result["peers"]:
            mine = ours.get(p["n"])
            lines.append(
                f"| {p['n']} | {p['tool']} | {p['wall_s']['median']:.2f} s | {p['wall_s']['p99']:.2f} s | "
                f"{len(p['failures'])}/{p['wall_s']['n']} | {p['cpu_s_per_run']:.2f} s | "
                f"{p['others_cores']:.2f} cores | {p['load']['median']:.1f} | "
                + (f"{mine * 1000:.0f} ms (÷{p['wall_s']['median'] / mine:.1f})" if mine else "-")
                + " |"
            )
    for r in [*result["picluster"], *result["peers"]]:
        for failure in r["failures"][:3]:
            lines.append(f"\nfailure at N={r['n']} {r.get('tool', 'piclusterctl')}: {failure}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,50,100,250,1050", help="fleet sizes N (comma-separated)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per size (after one warm-up)")
    ap.add_argument("--ssh-sizes", default="10,50,100", help="sizes for clush and pdsh; empty: skip them")
    ap.add_argument("--ssh-runs", type=int, default=0, help="timed runs per size for the peers (default --runs)")
    ap.add_argument("--tick-s", type=float, default=1.0, help="the fleet's tick (telemetry every tick)")
    ap.add_argument("--threads", type=int, default=1, help="the fleet's logic threads")
    ap.add_argument("--fleets", type=int, default=1, help="sim-fleet processes the nodes are split over")
    ap.add_argument("--phase-runs", type=int, default=5, help="in-process runs timed step by step (0: none)")
    ap.add_argument("--controller-from", metavar="DIR", help="time the piclusterctl of this checkout (e.g. main)")
    ap.add_argument("--signed", action="store_true", help="sign every run; the nodes require it (as the .deb)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ssh_sizes = [int(s) for s in args.ssh_sizes.split(",") if s]
    raise_nofile(max(sizes, default=0))
    result: dict[str, Any] = {"machine": machine(), "picluster": [], "peers": [], "args": vars(args)}
    result["controller"] = controller_source(args.controller_from)
    with workspace("dispatch", args.controller_from) as (work, env):
        if not measure(args, sizes, ssh_sizes, result, work, env):
            return 1
    publish(report(result), result, args.json)
    return 0


def measure(
    args: argparse.Namespace,
    sizes: list[int],
    ssh_sizes: list[int],
    result: dict[str, Any],
    work: Path,
    env: dict[str, str],
) -> bool:
    broker = Mosquitto(work)
    sshd: Sshd | None = None
    try:
        broker.start()
        result["imports_ms"] = import_ms(env)
        for n in sizes:
            print(f"piclusterctl, N={n} ...", file=sys.stderr, flush=True)
            r = bench_picluster(n, args.runs, broker, work, args, env)
            result["picluster"].append(r)
            print(
                f"  median {r['wall_s']['median'] * 1000:.0f} ms, p99 {r['wall_s']['p99'] * 1000:.0f} ms",
                file=sys.stderr,
            )
        missing = [tool for tool in ("clush", "pdsh", "ssh-keygen") if shutil.which(tool) is None]
        if not Path("/usr/sbin/sshd").exists():
            missing.append("sshd")
        if ssh_sizes and missing:
            print(
                f"skipping clush and pdsh: {', '.join(missing)} missing (scripts/setup.sh installs them)",
                file=sys.stderr,
            )
        elif ssh_sizes:
            sshd = Sshd(work / "ssh")
            sshd.work.mkdir()
            sshd.start(max(ssh_sizes))
            for n in ssh_sizes:
                for tool in ("clush", "pdsh"):
                    print(f"{tool}, N={n} ...", file=sys.stderr, flush=True)
                    result["peers"].append(bench_peer(tool, n, args.ssh_runs or args.runs, sshd))
    except BenchError as exc:
        print(f"dispatch: {exc}", file=sys.stderr)
        return False
    finally:
        if sshd is not None:
            sshd.stop()
        broker.stop()
    return True


if __name__ == "__main__":
    sys.exit(main())
