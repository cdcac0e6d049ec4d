#!/usr/bin/env python3
"""The fuzz suite at full size (issue 12): 100,000 hostile payloads over every topic a real agent subscribes to.

What tests/security/test_fuzz.py does with 20,000 (tests/security/fuzz_rig.py has the payload families), here with
``--payloads`` (default 100,000) behind a private Mosquitto *without* ``message_size_limit`` (the 4 MB payloads
reach the agent), for two agents in turn on the same seeded stream: this checkout, and ``--baseline`` (a git ref,
default ``main``, its ``nodeagent`` exported with ``git archive``), the peer. Each gets the same warm-up (every
made-up node's telemetry and status, then ``--warm-up`` payloads); then VmRSS is read, the payloads are sent at
``--rate`` a second, and the run ends when the agent answers a command sent after the last of them (its commands are
served in order). Printed and written as JSON (``--json``): payloads a second (sent / time to that answer), RSS
growth, the agent's log (lines, the longest, lines over 1 KB, dropped-message lines), processes it started (its
children sampled every 5 ms) and the longest silence of its telemetry.

Every process started here is stopped by PID in a ``finally``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.localcluster import (  # noqa: E402
    agent_argv,
    free_port,
    open_to_jobs,
    sim_jobs_config,
    start_mosquitto,
    stop,
)
from tests.security.fuzz_rig import FUZZ_TOML, Payloads, subscriptions  # noqa: E402
from tests.security.fuzz_session import FuzzSession  # noqa: E402

CLUSTER = "fuzz"


def export(ref: str, into: Path) -> Path:
    """The ``nodeagent`` package of git ref ``ref``, unpacked under ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "nodeagent"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def one_agent(code: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One agent (its ``nodeagent`` from ``code``) under the whole fuzz; what it did."""
    work.mkdir()
    open_to_jobs(work)
    port = free_port()
    broker = start_mosquitto(work, port)
    url = f"mqtt://127.0.0.1:{port}"
    state = work / "n1"
    state.mkdir()
    conf = state / "agent.toml"
    conf.write_text("[agent]\ntick_s = 0.5\n[jobs]\n" + sim_jobs_config() + FUZZ_TOML)
    log = state / "agent.log"
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{REPO}"}
    agent: subprocess.Popen[bytes] | None = None
    try:
        with open(log, "wb") as fh:
            argv = agent_argv("n1", url, CLUSTER, state, "--config", str(conf))
            agent = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=state)
        filters = subscriptions("n1", CLUSTER, work / "probe")
        with FuzzSession(url, CLUSTER, "n1") as session:
            session.wait("n1's first telemetry", lambda: session.telemetry_times(), 60)
            session.warm_up(Payloads(filters, "n1", seed=args.seed + 1, big_every=300), args.warm_up, args.rate)
            outcome = session.fuzz(agent.pid, Payloads(filters, "n1", seed=args.seed), args.payloads, args.rate)
        alive = agent.poll() is None
    finally:
        if agent is not None:
            stop(agent)
        stop(broker)
    lines = log.read_text(errors="replace").splitlines()
    return {
        "payloads": outcome.sent,
        "families": outcome.families,
        "topics": len(outcome.per_filter),
        "payloads_per_s": round(outcome.per_s),
        "fuzz_s": round(outcome.fuzz_s, 1),
        "rss_before_kib": outcome.rss_before_kib,
        "rss_after_kib": outcome.rss_after_kib,
        "rss_growth_kib": outcome.rss_growth_kib,
        "log_lines": len(lines),
        "longest_line": max((len(line.encode()) for line in lines), default=0),
        "lines_over_1kb": sum(len(line.encode()) > 1024 for line in lines),
        "dropped_lines": sum("event=message_dropped" in line for line in lines),
        "children": len(outcome.spawned),
        "telemetry_gap_s": round(outcome.telemetry_gap_s, 2),
        "alive": alive and outcome.alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=100_000)
    parser.add_argument("--warm-up", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=2_500.0, help="payloads a second sent (default 2500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline", default="main", help="git ref of the peer agent (default main)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-fuzz-"))
    try:
        runs = {"this checkout": one_agent(REPO, work / "new", args)}
        runs[f"{args.baseline} (peer)"] = one_agent(export(args.baseline, work / "old"), work / "baseline", args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
