"""`make demo`: a broker and four simulated nodes on this machine, one HPL over all of them, then everything stops.

The nodes share this machine's loopback, so the cluster HPL really runs one mpirun whose remote daemons the
agents start for each other over MQTT (no SSH), one rank per simulated node.

Every process started here is stopped by its PID on the way out, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from localcluster import agent_argv, free_port, open_to_jobs, sim_jobs_config, start_mosquitto, stop

NODES = ("node1", "node2", "node3", "node4")
CLUSTER = "demo"


# After every node is online, how long the first table waits for the nodes' first telemetry (an agent publishes
# one per tick, 1 s by default): two ticks, then the table says "waiting for first report" for the late ones.
FIRST_REPORT_S = 2.0


def nodes_json(ctl: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run([*ctl, "nodes", "--json"], capture_output=True, text=True, check=False).stdout
    return list(json.loads(out or "[]"))


def wait_online(ctl: list[str], count: int, timeout_s: float = 30.0) -> None:
    """Until `piclusterctl nodes` shows every agent online with its facts, then (bounded) with its first
    telemetry too."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for n in nodes_json(ctl) if n["status"] == "online" and n["cores"]) >= count:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"demo: the agents did not come online within {timeout_s:g} s; their logs are kept")
    reports_by = time.monotonic() + FIRST_REPORT_S
    while time.monotonic() < reports_by:
        if sum(1 for n in nodes_json(ctl) if n["telemetry_age_s"] is not None) >= count:
            return
        time.sleep(0.2)


def main() -> int:
    if shutil.which("mosquitto") is None:
        print("demo: mosquitto is missing; run `make setup` as root or `sudo apt install mosquitto`", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="picluster-demo-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_mosquitto(work, port))
        print(f"demo: broker {url}; starting {len(NODES)} simulated nodes (logs in {work})")
        for node in NODES:
            state = work / node
            state.mkdir()
            open_to_jobs(state)  # the jobs run as an unprivileged user, who must reach their directories
            conf = state / "agent.toml"
            # The launcher by module path: `make demo` runs from the source tree, where no console script is installed.
            conf.write_text(
                f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n[jobs]\n{sim_jobs_config()}'
            )
            with open(state / "agent.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        agent_argv(node, url, CLUSTER, state, "--config", str(conf)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        ctl = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", CLUSTER]
        wait_online(ctl, len(NODES))
        subprocess.run([*ctl, "nodes"], check=False)
        print()
        result = subprocess.run([*ctl, "run", "hpl", "--nodes", "all"], check=False)
        print()
        subprocess.run([*ctl, "nodes"], check=False)
        return result.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(procs):
            stop(proc)
        if os.environ.get("PICLUSTER_KEEP_DEMO") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
