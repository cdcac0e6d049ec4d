"""What the agents cost a cluster HPL: Gflops when the agents launch hpcc vs the same hpcc run by hand.

    python3 bench/cluster_hpl.py [--reps 3] [--n 2000] [--nb 128] [--nodes 1] [--json FILE]

Starts a private Mosquitto and ``--nodes`` simulated agents on loopback (their launcher by module path), then,
in alternating order, for every repetition: (a) ``piclusterctl run hpl --nodes ...`` with N/NB fixed and two
ranks in all (``ranks_per_node`` = 2 / nodes), and (b) the same mpirun command line the leader ran (taken from
its ``started`` event), with the same ``hpccinf.txt`` and host file copied from the leader's job directory, the
same environment, started by hand in a fresh directory. It reports the median Gflops of each and the ratio
(agents / by hand). With ``--nodes 2`` the hand run needs the agents for the second node's daemon too (the host
file names it), so ``--nodes 1`` is the clean comparison: the same mpirun, hpcc and ranks with or without the
agent and the controller around them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.session import Session  # noqa: E402
from nodeagent.errors import ProtocolError  # noqa: E402
from nodeagent.jobs.kinds.hpl import parse_hpcc_output  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Event, Topics, decode  # noqa: E402
from scripts.localcluster import agent_argv, free_port, open_to_jobs, sim_jobs_config, start_mosquitto, stop  # noqa: E402


def ctl_argv(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", "bench", *args]


def wait_online(url: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(ctl_argv(url, "nodes", "--json"), capture_output=True, text=True, cwd=REPO).stdout
        if sum(1 for n in json.loads(out or "[]") if n["status"] == "online" and n["cores"]) >= count:
            return
        time.sleep(0.3)
    raise SystemExit("bench: the agents did not come online")


def by_agents(url: str, nodes: int, n: int, nb: int, work: Path, events: Session) -> tuple[float, list[str], Path]:
    """One run through piclusterctl; its Gflops, the leader's mpirun argv (from its started event), its job dir."""
    names = f"node[1-{nodes}]" if nodes > 1 else "node1"
    args = ["run", "hpl", "--nodes", names, "--json", "--param", f"n={n}", "--param", f"nb={nb}"]
    args += ["--param", f"ranks_per_node={2 // nodes}"]
    proc = subprocess.run(ctl_argv(url, *args), capture_output=True, text=True, cwd=REPO)
    out = json.loads(proc.stdout)
    if not out.get("passed"):
        raise SystemExit(f"bench: the agents' run failed: {out.get('reason')}\n{proc.stderr}")
    job_dir = work / "node1" / "jobs" / out["job"]
    argv: list[str] = []
    while not argv and (msg := events.get(5.0)) is not None:
        with contextlib.suppress(ProtocolError):
            event = decode(msg.payload, Event)
            if event.job == out["job"] and event.kind == "started":
                argv = list(event.data["argv"])
    if not argv:
        raise SystemExit("bench: no started event from the leader")
    return float(out["gflops"]), argv, job_dir


def by_hand(argv: list[str], job_dir: Path, tmp: Path, env: dict[str, str]) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=tmp, prefix="hand-"))
    for name in ("hpccinf.txt", "hostfile"):
        shutil.copy(job_dir / name, run_dir / name)
    subprocess.run(argv, cwd=run_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return parse_hpcc_output((run_dir / "hpccoutf.txt").read_text()).gflops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nb", type=int, default=128)
    ap.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-hpl-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        procs.append(start_mosquitto(work, port))
        for i in range(1, args.nodes + 1):
            state = work / f"node{i}"
            state.mkdir()
            open_to_jobs(state)
            launcher = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n'
            (state / "agent.toml").write_text(launcher + "[jobs]\n" + sim_jobs_config())
            argv = agent_argv(f"node{i}", url, "bench", state, "--config", str(state / "agent.toml"))
            with open(state / "agent.log", "wb") as log:
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
        wait_online(url, args.nodes)
        events = Session(Broker.parse(url), "bench", subscriptions=(Topics("bench").events("node1"),)).__enter__()
        agents: list[float] = []
        hand: list[float] = []
        agent_share: list[float] = []
        hand_env = {**env, "OPENBLAS_NUM_THREADS": "1"}
        if os.geteuid() == 0:
            hand_env |= {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        for rep in range(args.reps):
            order = ("agents", "hand") if rep % 2 == 0 else ("hand", "agents")
            for which in order:
                if which == "agents" or not agents:  # the first hand run needs a leader's argv: one agents run first
                    cpu0, wall0 = sum(_cpu_s(p.pid) for p in procs[1:]), time.monotonic()
                    gflops, argv, job_dir = by_agents(url, args.nodes, args.n, args.nb, work, events)
                    cpu, wall = sum(_cpu_s(p.pid) for p in procs[1:]) - cpu0, time.monotonic() - wall0
                    if which == "agents" or rep > 0:
                        agents.append(gflops)
                        agent_share.append(cpu / (wall * 2))  # of the two ranks' cores for the whole run
                        print(f"rep {rep + 1}: agents {gflops:.3f} Gflops (agents' CPU {cpu:.2f} s in {wall:.1f} s)")
                    if which == "agents":
                        continue
                hand_gflops = by_hand(argv, job_dir, work, hand_env)
                hand.append(hand_gflops)
                print(f"rep {rep + 1}: by hand {hand_gflops:.3f} Gflops", flush=True)
        events.__exit__()
        ratio = statistics.median(agents) / statistics.median(hand)
        summary = {
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "n": args.n,
            "nb": args.nb,
            "nodes": args.nodes,
            "ranks": 2,
            "reps": args.reps,
            "agents_gflops": agents,
            "hand_gflops": hand,
            "agents_median": statistics.median(agents),
            "hand_median": statistics.median(hand),
            "ratio": ratio,
            "paired_ratio_median": statistics.median(a / h for a, h in zip(agents, hand, strict=True)),
            "agent_cpu_share_median": statistics.median(agent_share),
            "mpirun": argv,
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
