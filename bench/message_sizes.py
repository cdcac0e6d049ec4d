#!/usr/bin/env python3
"""The largest MQTT messages picluster sends, to choose the broker's ``message_size_limit`` above them.

1. **Recorded**: a private Mosquitto, ``--nodes`` simulated agents (Home Assistant discovery on, as by default) and
   a subscriber on ``#`` that keeps the largest payload per kind of topic, while piclusterctl runs a cluster HPL
   over all the nodes and a stress job on each.
2. **Built for a full fleet**: the messages whose size grows with the fleet, encoded by picluster's own code for
   ``--fleet`` nodes (1,050 is the design's largest): the cluster HPL ``run`` command, and the leader's
   ``accepted`` event carrying the plan with every host.

It prints one table; every process it starts is stopped by PID. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.cluster_run import cluster_job  # noqa: E402
from controller.hpl_plan import NodeSize, plan_cluster  # noqa: E402
from nodeagent.mqtt.link import Link  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Command, Event, encode  # noqa: E402
from nodeagent.protocol.codec import MAX_PAYLOAD_BYTES  # noqa: E402
from scripts.localcluster import agent_argv, free_port, open_to_jobs, sim_jobs_config, start_mosquitto, stop  # noqa: E402

CLUSTER = "sizes"


def _kind(topic: str) -> str:
    """A topic with node names replaced by ``<node>``: one row per kind."""
    topic = re.sub(r"^homeassistant/device/[^/]+", "homeassistant/device/<node>", topic)
    return re.sub(r"/(node|ctl)/[^/]+/", r"/\1/<\1>/", topic)


def recorded(nodes: int) -> dict[str, int]:
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-sizes-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = start_mosquitto(work, port)
    largest: dict[str, int] = {}
    lock = threading.Lock()

    def seen(topic: str, payload: bytes, retained: bool) -> None:
        with lock:
            largest[_kind(topic)] = max(largest.get(_kind(topic), 0), len(payload))

    tap = Link(f"sizes-{os.getpid()}", Broker.parse(url), on_message=seen)
    tap.subscribe("#", qos=0)
    procs = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = (
        f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\n[jobs]\nkinds = ["hpl", "stress"]\n'
        + sim_jobs_config()
    )
    try:
        tap.start()
        tap.wait_connected(10)
        for i in range(1, nodes + 1):
            state = work / f"node{i}"
            state.mkdir()
            open_to_jobs(state)
            (state / "agent.toml").write_text("[agent]\ntick_s = 0.5\n" + launcher)
            argv = agent_argv(f"node{i}", url, CLUSTER, state, "--config", str(state / "agent.toml"))
            out = open(state / "agent.log", "wb")  # noqa: SIM115 - closed when the process ends
            procs.append(subprocess.Popen(argv, env=env, cwd=state, stdout=out, stderr=subprocess.STDOUT))
        time.sleep(4)
        ctl = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", CLUSTER]
        runs = [
            ["run", "hpl", "--nodes", f"node[1-{nodes}]", "--json", "--param", "n=1000", "--param", "nb=64"],
            ["run", "stress", "--nodes", f"node[1-{nodes}]", "--json", "--set", "duration_s=3"],
        ]
        for args in runs:
            done = subprocess.run([*ctl, *args], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
            print(f"# piclusterctl {' '.join(args[:3])}: exit {done.returncode}")
        time.sleep(1)
    finally:
        tap.stop()
        for proc in procs:
            stop(proc)
        stop(broker)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return largest


def built(fleet: int) -> dict[str, int]:
    sizes = [NodeSize(f"node{i:04d}", 4, 8053, "Cortex-A76") for i in range(1, fleet + 1)]
    plan = plan_cluster(sizes, {})
    job = cluster_job(plan, "hpl-20261205-120000-abcd", timeout_s=3600, force=False)
    run = encode(Command(id=job.id, cmd="run", nodes=plan.nodes, job=job, sender="operator", t=time.time()))
    leader_plan = {
        **{k: getattr(plan, k) for k in ("n", "nb", "p", "q", "ranks", "ranks_per_node")},
        **{"role": "leader", "hosts": list(plan.nodes), "launcher": "agent", "binary": "hpcc"},
    }
    accepted = encode(
        Event(node="node0001", seq=1, t=time.time(), kind="accepted", job=job.id, data={"plan": leader_plan})
    )
    return {f"cluster run command, {fleet} nodes": len(run), f"leader's accepted event, {fleet} hosts": len(accepted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="simulated agents in the recorded run")
    parser.add_argument("--fleet", type=int, default=1050, help="nodes of the built messages")
    args = parser.parse_args()
    print(f"# message_sizes: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; agent decode limit {MAX_PAYLOAD_BYTES:,} bytes")
    rows = {**{f"recorded: {k}": v for k, v in sorted(recorded(args.nodes).items())}, **built(args.fleet)}
    print("\n| message | largest payload (bytes) |\n|---|---:|")
    for name, size in rows.items():
        print(f"| {name} | {size:,} |")
    print(f"\nlargest: {max(rows.values()):,} bytes")


if __name__ == "__main__":
    main()
