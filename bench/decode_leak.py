#!/usr/bin/env python3
"""Memory of decoding hostile msgpack (issue 12, finding 6): before and after the pre-scanner, in one run.

Debian 12's msgpack 1.0.3 leaks ~80 bytes per level of nesting of a malformed payload. This script measures:

1. **In one process**: VmRSS before and after decoding ``--messages`` hostile 1 KiB payloads, with msgpack alone
   (what the agent did before) and with ``nodeagent.protocol.codec.unpackb`` (size check, pre-scan, msgpack), each
   in a fresh interpreter (``--python``, default Debian's /usr/bin/python3).
2. **Through a real agent**: a private Mosquitto and two ``picluster-agent run --sim`` on ``--python``, one running
   ``--baseline`` (a git ref, default ``main``; its ``nodeagent`` is exported with ``git archive``) and one this
   checkout. Each receives the same ``--messages`` deep 1 KiB payloads on another node's ``power`` topic (which
   every agent reads); a malformed command with a known id sent after them marks when all were handled (its
   ``rejected`` event). The agents' VmRSS before and after is compared.
3. **Decode cost** of valid messages (telemetry, facts, a cluster command naming 1,050 nodes): median time of
   msgpack alone and of the codec, and their ratio.

Every process it starts is stopped by PID in a ``finally``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgpack  # noqa: E402

from nodeagent.mqtt.link import Link  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Event, Topics, decode  # noqa: E402
from scripts.localcluster import agent_argv, free_port, start_mosquitto, stop  # noqa: E402

CLUSTER = "leak"
PAYLOADS = {
    "deep arrays, cut short": b"\x91" * 1024,
    "deep maps, cut short": b"\x81\xa1k" * 341 + b"\x81",
    "deep arrays, then 0xC1": b"\x91" * 1023 + b"\xc1",
}

IN_PROCESS = r"""
import sys, json
sys.path.insert(0, {repo!r})
import msgpack
from nodeagent.protocol import codec
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
payload = bytes.fromhex({payload!r})
decode = (lambda p: msgpack.unpackb(p, raw=False, strict_map_key=True)) if {way!r} == "msgpack" else codec.unpackb
for _ in range(50):  # warm up: imports, exception objects
    try: decode(payload)
    except Exception: pass
before = rss_kib()
for _ in range({messages}):
    try: decode(payload)
    except Exception: pass
print(json.dumps({{"before": before, "after": rss_kib(), "msgpack": ".".join(map(str, msgpack.version))}}))
"""

COST = r"""
import sys, json, time, statistics
sys.path.insert(0, {repo!r})
import msgpack
from nodeagent.protocol import codec, encode, Command, JobSpec, NodeFacts, Telemetry
nodes = tuple(f"node{{i}}" for i in range(1, 1051))
params = {{n: {{"role": "member", "leader": "node1"}} for n in nodes[1:]}}
job = JobSpec(id="hpl-x", kind="hpl", params={{"n": 80000, "nb": 256, "p": 30, "q": 140}}, node_params=params)
msgs = {{
    "telemetry": encode(Telemetry(node="node1", seq=1, t=1.0, temp_c=55.0, freq_mhz=2400.0, fan_duty_pct=40.0)),
    "facts": encode(NodeFacts(node="node1", agent_version="1", board="cm5", model="m", serial="s", cores=4,
                              memory_mb=8000, capabilities=("hpl", "stress"), policy={{"a": {{"b": 1}}}})),
    "cluster run, 1,050 nodes": encode(Command(id="hpl-x", cmd="run", nodes=nodes, job=job)),
}}
out = {{}}
for name, payload in msgs.items():
    reps = 200 if len(payload) > 10000 else 5000
    row = {{"bytes": len(payload)}}
    alone = lambda p: msgpack.unpackb(p, raw=False, strict_map_key=True)  # noqa: E731
    for way, fn in (("msgpack", alone), ("codec", codec.unpackb)):
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(payload)
            samples.append((time.perf_counter() - t0) / reps * 1e6)
        row[way] = statistics.median(samples)
    out[name] = row
print(json.dumps(out))
"""


def _run_py(python: str, code: str) -> dict:
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _export(ref: str, into: Path) -> Path:
    """The ``nodeagent`` package of git ref ``ref``, unpacked under ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "nodeagent"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _wait_rejected(inbox: list[Event], job: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(e.job == job and e.kind == "rejected" for e in inbox):
            return
        time.sleep(0.05)
    raise SystemExit(f"no rejected event for {job} within {timeout_s} s: is the agent alive?")


def through_agents(python: str, messages: int, baseline: str, work: Path) -> dict[str, dict[str, int]]:
    port = free_port()
    broker = start_mosquitto(work, port)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    url = f"mqtt://127.0.0.1:{port}"
    topics = Topics(CLUSTER)
    events: list[Event] = []

    def received(topic: str, payload: bytes, retained: bool) -> None:
        with contextlib.suppress(ValueError):
            events.append(decode(payload, Event))

    link = Link(f"leak-bench-{os.getpid()}", Broker.parse(url), on_message=received)
    try:
        old = _export(baseline, work / "baseline")
        for node, code in (("old", old), ("new", REPO)):
            state = work / node
            state.mkdir()
            env = {**os.environ, "PYTHONPATH": str(code)}
            argv = agent_argv(node, url, CLUSTER, state, python=python)
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            procs[node] = subprocess.Popen(argv, env=env, cwd=state, **quiet)
        for node in procs:
            link.subscribe(topics.events(node), qos=1)
        link.start()
        if not link.wait_connected(10):
            raise SystemExit("cannot reach the bench broker")
        time.sleep(4)  # both agents connected and ticking
        out: dict[str, dict[str, int]] = {}
        before = {node: _rss_kib(p.pid) for node, p in procs.items()}
        payload = PAYLOADS["deep arrays, cut short"]
        for i in range(messages):
            link.publish(topics.power("driver"), payload, qos=0)
            if i % 500 == 499:
                time.sleep(0.05)  # let paho's queue drain
        for node in procs:
            marker = f"leak-marker-{node}"
            # A command with a known id and an unknown cmd: its rejection shows every earlier message was handled.
            bad = msgpack.packb({"v": 1, "type": "command", "id": marker, "cmd": "?"})
            link.publish(topics.node_cmd(node), bad, qos=1)
            _wait_rejected(events, marker, 120)
            out[node] = {"before": before[node], "after": _rss_kib(procs[node].pid)}
        return out
    finally:
        link.stop()
        for proc in procs.values():
            stop(proc)
        stop(broker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter (Debian's has msgpack 1.0.3)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--baseline", default="main", help="git ref of the agent before the change")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    print(f"# decode_leak: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, --python {args.python}")
    figures: dict[str, object] = {}

    print(f"\n## In one process: {args.messages} hostile 1 KiB payloads\n")
    print("| payload | decoder | RSS before (MiB) | RSS after (MiB) | growth (MiB) |\n|---|---|---:|---:|---:|")
    for name, payload in PAYLOADS.items():
        for way in ("msgpack", "codec"):
            code = IN_PROCESS.format(repo=str(REPO), payload=payload.hex(), way=way, messages=args.messages)
            r = _run_py(args.python, code)
            figures[f"{name} / {way}"] = r
            label = f"msgpack {r['msgpack']} alone" if way == "msgpack" else "codec.unpackb (pre-scan first)"
            growth = (r["after"] - r["before"]) / 1024
            print(f"| {name} | {label} | {r['before'] / 1024:.1f} | {r['after'] / 1024:.1f} | {growth:.1f} |")

    print(f"\n## Through a real agent: {args.messages} deep 1 KiB payloads on a power topic\n")
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-leak-"))
    try:
        agents = through_agents(args.python, args.messages, args.baseline, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["agents"] = agents
    print("| agent | RSS before (MiB) | RSS after (MiB) | growth (MiB) |\n|---|---:|---:|---:|")
    for node, label in (("old", f"{args.baseline} (msgpack alone)"), ("new", "this checkout (pre-scan)")):
        r = agents[node]
        growth = (r["after"] - r["before"]) / 1024
        print(f"| {label} | {r['before'] / 1024:.1f} | {r['after'] / 1024:.1f} | {growth:.1f} |")

    print("\n## Decode cost of valid messages (median of 7 rounds)\n")
    cost = _run_py(args.python, COST.format(repo=str(REPO)))
    figures["cost"] = cost
    print("| message | bytes | msgpack alone (µs) | codec (µs) | ratio |\n|---|---:|---:|---:|---:|")
    for name, row in cost.items():
        ratio = row["codec"] / row["msgpack"]
        print(f"| {name} | {row['bytes']:,} | {row['msgpack']:.1f} | {row['codec']:.1f} | {ratio:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
