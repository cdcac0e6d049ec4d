#!/usr/bin/env python3
"""What signing costs a command: the operator's side (encode, then seal) and a node's (the command gate), signed vs
unsigned, for a small command (``identify``) and the largest one (a cluster HPL ``run`` for ``--fleet`` nodes,
which every node of the fleet verifies once); then end to end, ``--nodes`` simulated agents answering one
``identify`` on the cluster topic, signed vs unsigned, alternating.

Part 1 is in-process (no I/O): each figure is the median over ``--repeat`` timings of ``--number`` calls. Part 2
starts a private Mosquitto and real agents that trust the key and accept both (``require_signed = false`` still
verifies a signature it can); every process it starts is stopped by PID. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import cryptography

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.cluster_run import cluster_job  # noqa: E402
from controller.fleet import subscriptions  # noqa: E402
from controller.hpl_plan import NodeSize, plan_cluster  # noqa: E402
from controller.session import Session  # noqa: E402
from nodeagent.mqtt.settings import Broker  # noqa: E402
from nodeagent.protocol import Command, Event, Topics, decode, encode, envelope  # noqa: E402
from nodeagent.security.gate import CommandGate  # noqa: E402
from nodeagent.security.keys import SigningKey  # noqa: E402
from nodeagent.security.seal import seal  # noqa: E402
from scripts.localcluster import agent_argv, free_port, start_mosquitto, stop  # noqa: E402

CLUSTER = "signcost"


def median_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def commands(fleet: int) -> dict[str, tuple[str, Command]]:
    """name -> (topic, command): a small one and the largest one piclusterctl sends."""
    topics = Topics(CLUSTER)
    sizes = [NodeSize(f"node{i:04d}", 4, 8053, "Cortex-A76") for i in range(1, fleet + 1)]
    plan = plan_cluster(sizes, {})
    key = SigningKey.generate().public.b64
    job = cluster_job(plan, "hpl-20261205-120000-abcd", timeout_s=3600, force=False, leader_key=key)
    run = Command(id=job.id, cmd="run", nodes=plan.nodes, job=job, sender="operator", t=time.time())
    identify = Command(id="identify-1", cmd="identify", nodes=("node0002",), sender="operator", t=time.time())
    return {
        "identify": (topics.node_cmd("node0002"), identify),
        f"run hpl, {fleet} nodes": (topics.cluster_cmd(), run),
    }


def figures(key: SigningKey, topic: str, cmd: Command, number: int, repeat: int) -> dict[str, float]:
    """Median microseconds per call of each step, for one command."""
    body = encode(cmd)
    copies = [seal(key, topic, body) for _ in range(number * repeat + 1)]  # distinct nonces: never a replay
    sealed = iter(copies)
    strict = CommandGate({key.public.id: key.public}, signed_only=True)
    strict.started = 0.0
    strict.nonces.max_per_key = len(copies) + 1
    lax = CommandGate({}, signed_only=False)
    env = envelope.unpack(copies[-1])
    signed_bytes = env.signed_bytes()
    return {
        "encode (unsigned send)": median_us(lambda: encode(cmd), number, repeat),
        "encode + seal (signed send)": median_us(lambda: seal(key, topic, encode(cmd)), number, repeat),
        "gate, unsigned (decode + validate)": median_us(lambda: lax.admit(topic, body), number, repeat),
        "gate, signed (+ envelope, verify, nonce)": median_us(
            lambda: strict.admit(topic, next(sealed)), number, repeat
        ),
        "Ed25519 sign alone": median_us(lambda: key.sign(signed_bytes), number, repeat),
        "Ed25519 verify alone": median_us(lambda: key.public.verify(env.sig, signed_bytes), number, repeat),
        "payload unsigned (B)": float(len(body)),
        "payload signed (B)": float(len(copies[0])),
    }


def in_process(fleet: int, number: int, repeat: int) -> list[str]:
    key = SigningKey.generate("bench")
    rows = []
    for name, (topic, cmd) in commands(fleet).items():
        n = max(1, number // (20 if cmd.cmd == "run" else 1))
        got = figures(key, topic, cmd, n, repeat)
        unsigned, signed = int(got.pop("payload unsigned (B)")), int(got.pop("payload signed (B)"))
        rows.append(f"| {name}: payload | {unsigned:,} B unsigned | {signed:,} B signed | |")
        for what, us in got.items():
            rows.append(f"| {name}: {what} | {us:,.1f} µs | | |")
        send = got["encode + seal (signed send)"] / got["encode (unsigned send)"]
        take = got["gate, signed (+ envelope, verify, nonce)"] / got["gate, unsigned (decode + validate)"]
        rows.append(f"| {name}: signed / unsigned | | | send ×{send:.2f}, node ×{take:.2f} |")
    return rows


def end_to_end(nodes: int, rounds: int) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-sign-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = start_mosquitto(work, port)
    key = SigningKey.generate("bench")
    keys_dir = work / "operators.d"
    keys_dir.mkdir(mode=0o755)
    (keys_dir / "bench.pub").write_text(key.public.line() + "\n")
    key_file = work / "bench.key"
    key.save(key_file)
    procs = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    names = [f"node{i}" for i in range(1, nodes + 1)]
    config = f'[agent]\ntick_s = 1.0\n[security]\nrequire_signed = false\noperator_keys_dir = "{keys_dir}"\n'
    try:
        for name in names:
            state = work / name
            state.mkdir()
            (state / "agent.toml").write_text(config)
            argv = agent_argv(name, url, CLUSTER, state, "--config", str(state / "agent.toml"))
            out = open(state / "agent.log", "wb")  # noqa: SIM115 - closed when the process ends
            procs.append(subprocess.Popen(argv, env=env, cwd=state, stdout=out, stderr=subprocess.STDOUT))
        topics = Topics(CLUSTER)
        times: dict[str, list[float]] = {"unsigned": [], "signed": []}
        broker_url = Broker.parse(url)
        subs = (*subscriptions(topics), topics.all_nodes("events"))
        os.environ.pop("PICLUSTER_KEY", None)
        listen = Session(broker_url, CLUSTER, subscriptions=subs, client_id=f"bench-listen-{os.getpid()}")
        with listen as s, Session(broker_url, CLUSTER, client_id=f"bench-plain-{os.getpid()}") as plain:
            assert plain.key is None  # no key: it sends unsigned
            os.environ["PICLUSTER_KEY"] = str(key_file)
            with Session(broker_url, CLUSTER, client_id=f"bench-signer-{os.getpid()}") as signer:
                assert signer.key is not None
                senders = {"unsigned": plain, "signed": signer}
                wait_online(s, topics, nodes)
                for i in range(rounds * 2):
                    how = ("unsigned", "signed")[i % 2]
                    times[how].append(one_round(s, senders[how], topics, names, i))
                    time.sleep(0.3)
    finally:
        for proc in procs:
            stop(proc)
        stop(broker)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    med = {how: statistics.median(ts) * 1000 for how, ts in times.items()}
    return [
        f"| identify to {nodes} agents, publish to the last alert: unsigned | {med['unsigned']:.1f} ms | | |",
        f"| identify to {nodes} agents, publish to the last alert: signed | {med['signed']:.1f} ms | | "
        f"×{med['signed'] / med['unsigned']:.2f} |",
    ]


def wait_online(s: Session, topics: Topics, nodes: int) -> None:
    online: set[str] = set()
    deadline = time.monotonic() + 60
    while len(online) < nodes and time.monotonic() < deadline:
        msg = s.get(0.5)
        parsed = topics.parse(msg.topic) if msg else None
        if msg and parsed and parsed[1] == "status" and msg.payload == b"online":
            online.add(parsed[0])
    time.sleep(2)  # their first ticks


def one_round(s: Session, sender: Session, topics: Topics, names: list[str], i: int) -> float:
    """Seconds from publishing one identify for every node to the last node's alert."""
    cmd = Command(id=f"id-{i}", cmd="identify", nodes=tuple(names), sender="bench", t=time.time())
    start = time.perf_counter()
    sender.command(topics.cluster_cmd(), cmd)
    waiting = set(names)
    while waiting and time.perf_counter() - start < 30:
        msg = s.get(0.5)
        parsed = topics.parse(msg.topic) if msg else None
        if msg and parsed and parsed[1] == "events":
            event = decode(msg.payload, Event)
            if event.data.get("identify") and event.t >= cmd.t - 0.001:
                waiting.discard(parsed[0])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=1050, help="nodes of the largest run command")
    parser.add_argument("--number", type=int, default=2000, help="calls per timing (a 20th for the large command)")
    parser.add_argument("--repeat", type=int, default=7, help="timings per figure (the median is shown)")
    parser.add_argument("--nodes", type=int, default=8, help="simulated agents end to end (0: skip)")
    parser.add_argument("--rounds", type=int, default=15, help="end-to-end rounds of each kind, alternating")
    args = parser.parse_args()
    python = sys.version.split()[0]
    print(f"# sign_cost: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {python}")

    print(f"# cryptography {cryptography.__version__}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    rows = in_process(args.fleet, args.number, args.repeat)
    if args.nodes:
        rows += end_to_end(args.nodes, args.rounds)
    print("\n| what | median | | ratio |\n|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
