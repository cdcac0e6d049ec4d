#!/usr/bin/env python3
"""CPU per decode (and encode) of the wire messages a controller and a node handle most: a simulated node's
telemetry, facts and events, and a run command naming 10 or 1,050 nodes.

    python3 bench/codec_cost.py [--repo DIR] [--repeats 7]

``--repo`` measures another checkout's code (e.g. /work/main, before a change) with this same script. Each
figure is the median of ``--repeats`` rounds of ``time.process_time`` over enough calls to last ~0.2 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def per_call_us(fn: Callable[[], object], repeats: int) -> float:
    calls = 1
    while True:  # enough calls to last ~0.2 s
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        if time.process_time() - t0 > 0.2:
            break
        calls *= 2
    rounds = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.process_time() - t0) / calls * 1e6)
    return statistics.median(rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="the checkout to measure")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    sys.path.insert(0, str(repo))

    from nodeagent.hw.sim import SimBackend, SimConfig
    from nodeagent.node.telemetry import NodeState, telemetry_from
    from nodeagent.protocol import Command, Event, JobSpec, NodeFacts, Telemetry, decode, encode

    backend = SimBackend("sim1", SimConfig(), lambda: 0.0)
    sample = backend.read(1000.0)
    telemetry = telemetry_from("sim1", 1, sample, None, NodeState(40.0, "normal", "auto", False, None, ()))
    f = backend.facts()
    facts = NodeFacts(
        node="sim1", agent_version="0.1.0", board=f.board, model=f.model, serial=f.serial, cores=f.cores,
        memory_mb=f.memory_mb, cpu=f.cpu, hostname=f.hostname, sim=True, capabilities=("hpl", "noop"),
        policy={"guard": {"warm_c": 70.0, "hot_c": 80.0, "critical_c": 85.0}, "fan": {"curve": [[40, 20], [70, 100]]}},
    )  # fmt: skip
    finished = Event(node="sim1", seq=3, t=1.0, kind="finished", job="noop-1", result={"passed": True, "returncode": 0})
    job = JobSpec(id="noop-20261205-000000-abcd", kind="noop", timeout_s=60.0)
    cases: list[tuple[str, bytes, type]] = [
        ("telemetry (a simulated node's)", encode(telemetry), Telemetry),
        ("facts", encode(facts), NodeFacts),
        ("event: finished", encode(finished), Event),
    ]
    for n in (10, 1050):
        nodes = tuple(f"sim{i}" for i in range(1, n + 1))
        cmd = Command(id=job.id, cmd="run", nodes=nodes, job=job, sender="ctl", t=1.0)
        cases.append((f"run command naming {n:,} nodes", encode(cmd), Command))
    rev = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True)
    print(f"# codec cost, {repo} at {rev.stdout.strip()}, Python {platform.python_version()}, median of {args.repeats}")
    print("| message | bytes | decode (µs) |\n|---|---:|---:|")
    for name, payload, cls in cases:
        print(f"| {name} | {len(payload):,} | {per_call_us(lambda p=payload, c=cls: decode(p, c), args.repeats):.1f} |")
    print(f"\nencode telemetry: {per_call_us(lambda: encode(telemetry), args.repeats):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
