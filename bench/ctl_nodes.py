"""How long `piclusterctl nodes` takes for a fleet of simulated agents: the retained snapshot, no polling.

    python3 bench/ctl_nodes.py [--nodes 4] [--runs 20]

Starts a private Mosquitto and N `picluster-agent run --sim` processes, waits until all are online, then times
whole `piclusterctl nodes --json` processes (interpreter start included, as an operator sees it) and, in the same
run, the snapshot alone inside one process (subscribe, retained messages, sync marker). Prints medians.
Everything started is stopped by PID on the way out.
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

from controller.fleet_cli import snapshot  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Topics  # noqa: E402
from scripts.localcluster import agent_argv, free_port, start_mosquitto, stop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [start_mosquitto(work, port)]
    ctl = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", "bench", "nodes", "--json"]
    try:
        time.sleep(0.2)
        for i in range(1, args.nodes + 1):
            procs.append(
                subprocess.Popen(
                    agent_argv(f"node{i}", url, "bench", work / f"node{i}"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(ctl, capture_output=True, text=True, env=env).stdout
            if sum(n["status"] == "online" for n in json.loads(out or "[]")) == args.nodes:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("agents did not come online")
        whole = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = subprocess.run(ctl, capture_output=True, text=True, env=env, check=True).stdout
            whole.append(time.perf_counter() - t0)
            assert len(json.loads(out)) == args.nodes
        inner = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fleet = snapshot(Broker.parse(url), Topics("bench"))
            inner.append(time.perf_counter() - t0)
            assert len(fleet.nodes) == args.nodes
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import controller.cli"], env=env, check=True)
        import_s = time.perf_counter() - start
        print(f"# piclusterctl nodes, {args.nodes} simulated nodes, {args.runs} runs each")
        print(
            f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
            f"Python {platform.python_version()}"
        )
        print(
            f"whole command (process start to exit): median {statistics.median(whole) * 1000:.0f} ms, "
            f"max {max(whole) * 1000:.0f} ms"
        )
        print(f"  of which interpreter start + imports: {import_s * 1000:.0f} ms (one run)")
        print(
            f"snapshot alone (connect, subscribe, retained, sync marker): median "
            f"{statistics.median(inner) * 1000:.1f} ms, max {max(inner) * 1000:.1f} ms"
        )
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
