"""How long piclusterctl takes as an operator sees it, whole process: `--version`, and a light job to 10 nodes.

    python3 bench/ctl_startup.py [--runs 30] [--nodes 10] [--python /usr/bin/python3] [--json FILE]

Starts a private Mosquitto (``set_tcp_nodelay true``) and ``--nodes`` simulated agents whose config defines a
light job template, ``light`` (``argv = ["true"]``, ``heavy = false``), waits until every one is online, then
times, round-robin so that load on the machine falls on all three alike:

- ``PY -c pass``: the interpreter alone, the floor;
- ``PY -m controller.cli --version``;
- ``PY -m controller.cli --broker URL --cluster bench run light --nodes all``: connect, the retained snapshot,
  one publish, every node's accepted/started/finished, the table, exit;
- the same signed (``PICLUSTER_KEY``), as a .deb fleet runs it: read the key, sign, and every agent verifies.

The agents trust the benchmark's operator key with ``require_signed = false``, so they take both runs and verify
the signature of the signed one (an agent verifies every signature it is given, required or not).

Each figure is a whole process from spawn to exit (``time.perf_counter`` around ``subprocess.run``). It prints the
median and p90 of each, the ratios to ``-c pass``, the machine, the date and the load average before and after.
Everything started is stopped by PID on the way out, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
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

from bench.fleetbench import operator_key  # noqa: E402
from scripts.localcluster import free_port, open_to_jobs, sim_jobs_config, start_mosquitto, stop  # noqa: E402

LIGHT = '[[jobs.template]]\nname = "light"\nargv = ["true"]\nheavy = false\ntimeout_s = 60\n'


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def start_agents(
    python: str, url: str, work: Path, count: int, env: dict[str, str], security: str
) -> list[subprocess.Popen[bytes]]:
    conf = work / "agent.toml"
    conf.write_text("[jobs]\n" + sim_jobs_config() + LIGHT + security)
    (work / "state").mkdir(exist_ok=True)
    open_to_jobs(work / "state")  # jobs never run as root: as SIM_JOBS_USER, who must reach their directories
    procs = []
    for i in range(1, count + 1):
        argv = [python, "-m", "nodeagent", "run", "--sim", "--node-id", f"sim{i}", "--broker", url]
        argv += ["--cluster", "bench", "--config", str(conf)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO))
    return procs


def wait_online(ctl: list[str], count: int, env: dict[str, str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([*ctl, "nodes", "--json"], capture_output=True, text=True, env=env, cwd=REPO).stdout
        if sum(bool(n["status"] == "online" and n["cores"]) for n in json.loads(out or "[]")) == count:
            return
        time.sleep(0.2)
    raise SystemExit(f"the {count} agents did not come online within {timeout_s:g} s")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    return time.perf_counter() - t0, proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="runs of each command (at least 20)")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--python", default="/usr/bin/python3", help="the interpreter (the .deb's: /usr/bin/python3)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    # The repository first on the path, as the .deb puts the packages on Debian's; agents keep state in `work`.
    env = {**os.environ, "PYTHONPATH": str(REPO), "STATE_DIRECTORY": str(work / "state")}
    env.pop("PICLUSTER_BROKER", None)
    env.pop("PICLUSTER_KEY", None)
    key_file, security = operator_key(work, require_signed=False)
    # Installed from the .deb, the modules come with their byte code compiled: let the warm-up run write it here.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ctl = [args.python, "-m", "controller.cli", "--broker", url, "--cluster", "bench"]
    commands = {
        "python3 -c pass": [args.python, "-c", "pass"],
        "piclusterctl --version": [args.python, "-m", "controller.cli", "--version"],
        f"piclusterctl run light --nodes all ({args.nodes} nodes)": [*ctl, "run", "light", "--nodes", "all"],
        f"piclusterctl run light --nodes all ({args.nodes} nodes), signed": [*ctl, "run", "light", "--nodes", "all"],
    }
    signed_env = {**env, "PICLUSTER_KEY": str(key_file)}
    env_of = {name: signed_env if name.endswith(", signed") else env for name in commands}
    procs: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    try:
        procs.append(start_mosquitto(work, port))
        procs += start_agents(args.python, url, work, args.nodes, env, security)
        wait_online(ctl, args.nodes, env)
        for name, argv in commands.items():  # warm the page cache and the byte-code caches once
            timed(argv, env_of[name])
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                took, proc = timed(argv, env_of[name])
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
                times[name].append(took)
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    versions = "import platform, paho.mqtt; print(platform.python_version(), paho.mqtt.__version__)"
    python, paho = subprocess.run([args.python, "-c", versions], capture_output=True, text=True).stdout.split()
    floor = statistics.median(times["python3 -c pass"])
    print(f"# piclusterctl start-up, {args.runs} runs of each, round-robin")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.python} (Python {python}), paho-mqtt {paho}"
    )
    print(f"load average (1/5/15 min): before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, ", end="")
    print(f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print()
    print("| command | median | p90 | median − `-c pass` |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        extra = "" if name == "python3 -c pass" else f"{(med - floor) * 1000:.0f} ms"
        print(f"| `{name}` | {med * 1000:.0f} ms | {p90(values) * 1000:.0f} ms | {extra} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"times_s": times, "load": [load_before, load_after]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
