"""Hostile payloads for a real agent over every topic it subscribes to, and what to watch while they land.

Shared by tests/security/test_fuzz.py (20,000 payloads a run) and bench/fuzz.py (100,000, with figures). The topics
come from the agent itself: ``subscriptions()`` builds the agent in-process from the same config and reads the
filters its MQTT session would subscribe to, then every ``+`` is filled with node names (more of them than any table
of the agent may hold) or, on a launch inbox, sender names. So a topic added to the agent is fuzzed without a
change here.

Payload families (``Payloads``): random bytes; valid messages cut short; valid messages with one field of the wrong
type; nesting far deeper than the codec allows; oversized (300 KB, and 4 MB, which a broker's
``message_size_limit`` drops, so they reach only an agent behind a broker without it); valid messages of every
peer kind from many made-up nodes (to fill the agent's tables to their bounds); Home Assistant's text payloads.
Valid commands are ones that start no process: a job of a kind the node does not allow, identify, fan, cancel,
resend. The agent is watched for child processes, memory, telemetry and log line length (``Watch``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from nodeagent.config import from_mapping
from nodeagent.hw import SimBackend, SimConfig
from nodeagent.protocol import (
    OFFLINE,
    ONLINE,
    ChassisPower,
    Command,
    JobSpec,
    NodeFacts,
    Telemetry,
    encode,
)
from nodeagent.wiring import build

# The agent under fuzz holds every role, so it subscribes to every topic an agent can: the chassis fan and power
# budget (everyone's telemetry, status, power), slot power (facts, status, power commands), Home Assistant.
FUZZ_CONFIG = {
    "hardware": {"slot": 1},
    "policy": {"chassis": {"role": "on"}},
    "slot_power": {"enabled": "on"},
    "homeassistant": {"enabled": True},
}
FUZZ_TOML = """
[hardware]
slot = 1
[policy.chassis]
role = "on"
[slot_power]
enabled = "on"
[homeassistant]
enabled = true
"""
PEER_NAMES = 3000  # more than MAX_NODES (2048): the agent's tables meet their bound
BIG = 4 * 1024 * 1024


def subscriptions(node: str, cluster: str, state_dir: Path, extra: dict[str, Any] | None = None) -> list[str]:
    """The topic filters an agent with FUZZ_CONFIG (and ``extra``) subscribes to, read from the agent itself."""
    data: dict[str, Any] = {k: dict(v) for k, v in FUZZ_CONFIG.items()}
    for section, values in (extra or {}).items():
        data.setdefault(section, {}).update(values)
    data["agent"] = {"node_id": node, "cluster": cluster, "state_dir": str(state_dir)}
    data["hardware"] = {**data["hardware"], "backend": "sim"}
    agent = build(from_mapping(data), SimBackend(node, SimConfig(), lambda: 0.0))
    try:
        return sorted(agent.link._subs)
    finally:
        if agent.slot_power is not None:
            agent.slot_power.close()
        agent.spool.close()


@dataclass(frozen=True)
class Payload:
    topic: str
    payload: bytes
    family: str
    retain: bool = False
    filter: str = ""  # the agent's subscription it matches


@dataclass
class Payloads:
    """An endless, seeded stream of hostile payloads over ``filters`` (the agent's subscriptions)."""

    filters: list[str]
    node: str
    seed: int = 0
    big_every: int = 1000  # one 4 MB payload in this many
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.names = [f"x{i:04d}" for i in range(PEER_NAMES)] + [self.node]

    # --- topics -----------------------------------------------------------------------------------------------
    def topic(self, flt: str) -> str:
        """A concrete topic for a filter: each ``+`` a node name (or, rarely, junk that still matches)."""
        parts = []
        for level in flt.split("/"):
            if level == "+":
                level = self.rng.choice(self.names) if self.rng.random() < 0.97 else self._junk_level()
            parts.append(level)
        return "/".join(parts)

    def _junk_level(self) -> str:
        alphabet = "abcXYZ019-_.!é $%"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 90)))

    @staticmethod
    def kind_of(flt: str) -> str:
        """What is expected on a filter: cmd, launch, ha, birth, or a peer leaf (telemetry, status, facts, power)."""
        last = flt.rsplit("/", 1)[-1]
        if "/ha/" in flt:
            return "ha"
        if "/launch/" in flt:
            return "launch"
        if last in ("telemetry", "status", "facts", "power", "cmd"):
            return last
        return "birth"

    # --- payloads ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Payload]:
        while True:
            yield self.next()

    def next(self) -> Payload:
        flt = self.rng.choice(self.filters)
        topic, kind = self.topic(flt), self.kind_of(flt)
        if self.big_every and self.rng.randrange(self.big_every) == 0:
            return Payload(topic, self.rng.randbytes(BIG), "4MB", filter=flt)
        family, make, _ = self.rng.choices(self.FAMILIES, weights=[w for _, _, w in self.FAMILIES])[0]
        payload = make(self, kind)
        return Payload(topic, payload, family, retain=self.rng.random() < 0.02, filter=flt)

    def random_bytes(self, kind: str) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 2048))

    def truncated(self, kind: str) -> bytes:
        whole = self.valid(kind)
        return whole[: self.rng.randrange(len(whole))] if whole else b"\x91"

    def wrong_type(self, kind: str) -> bytes:
        if kind in ("status", "ha", "birth"):  # text payloads: a msgpack document where text belongs
            return msgpack.packb({"v": 1, "type": "command", "id": "t1", "cmd": "identify"})
        data = msgpack.unpackb(self.valid_for(kind), raw=False)
        if not isinstance(data, dict) or not data:
            return self.rng.randbytes(64)
        key = self.rng.choice(sorted(data))
        data[key] = self._wrong(data[key])
        return msgpack.packb(data, use_bin_type=True)

    def _wrong(self, value: Any) -> Any:
        choices: list[Any] = [
            12345678901234567890,
            -1,
            3.5e308,
            float("nan"),
            "ştring" * self.rng.randint(1, 50),
            b"\x00\xff" * 10,
            [1, "a", None],
            {"k": {"k": [1, 2]}},
            None,
            True,
        ]
        return self.rng.choice([c for c in choices if type(c) is not type(value)])

    def deep(self, kind: str) -> bytes:
        depth = self.rng.choice([33, 64, 1000, 50_000])
        style = self.rng.randrange(3)
        if style == 0:
            return b"\x91" * depth  # arrays, cut short
        if style == 1:
            return b"\x81\xa1k" * depth + b"\xc0"  # maps, complete
        return b"\x91" * depth + b"\xc0"  # arrays, complete

    def oversized(self, kind: str) -> bytes:
        size = self.rng.choice([300_000, 262_145, 250_000])
        return msgpack.packb({"v": 1, "type": "command", "id": "big", "cmd": "fan", "value": "9" * size})

    def valid(self, kind: str) -> bytes:
        return self.valid_for(kind)

    def ha_text(self, kind: str) -> bytes:
        return self.rng.choice([b"PRESS", b"online", b"offline", b"auto", b"50", b"-1", b"1e999", b"", b"\xff" * 40])

    def valid_for(self, kind: str) -> bytes:
        """A valid message of the kind the topic carries, from a made-up node (never one that starts a process)."""
        name, t = self.rng.choice(self.names), time.time()
        if kind == "telemetry":
            return encode(
                Telemetry(name, self.rng.randint(0, 1 << 40), t, temp_c=self.rng.uniform(20, 90), power_w=5.0)
            )
        if kind == "facts":
            roles = self.rng.choice([(), ("chassis",), ("slot-power",), ("chassis", "slot-power")])
            slot = self.rng.randint(0, 64)
            return encode(NodeFacts(name, "9", "nanocluster", "cm5", "s", 4, 4096, slot=slot, roles=roles, t=t))
        if kind == "power":
            nodes = tuple(self.rng.sample(self.names, 20))
            return encode(ChassisPower(name, t, 1.0, 90.0, "nodes", 90.0, 1_500_000, nodes, nodes, 4.0, 10.0, 3.6))
        if kind == "status":
            return self.rng.choice([ONLINE, OFFLINE, "", "gone"]).encode()
        if kind in ("ha", "birth"):
            return self.ha_text(kind)
        return encode(self._safe_command(kind))

    def _safe_command(self, kind: str) -> Command:
        """A well-formed command that starts no process on the fuzzed node."""
        cid = f"fz{self.rng.randrange(1 << 30)}"
        if kind == "launch":
            return Command(id=cid, cmd="launch", job_id=f"j{cid}", argv=("orted", "-mca", "x", "y"), sender="x0001")
        nodes = (self.node,) if self.rng.random() < 0.5 else tuple(self.rng.sample(self.names, 5))
        pick = self.rng.randrange(5)
        if pick == 0:  # stress is not among this node's kinds: refused before anything runs
            job = JobSpec(id=cid, kind="stress", params={"duration_s": 1})
            return Command(id=cid, cmd="run", job=job, nodes=nodes)
        if pick == 1:
            return Command(id=cid, cmd="fan", value=self.rng.choice(["auto", "40", "101", "x"]), nodes=nodes)
        if pick == 2:
            return Command(id=cid, cmd="cancel", job_id=f"j{cid}", nodes=nodes)
        if pick == 3:
            return Command(id=cid, cmd="resend", job_id=f"j{cid}", nodes=nodes)
        return Command(id=cid, cmd="identify", nodes=nodes)

    # (family, maker, weight): the oversized ones are few but heavy (a quarter megabyte each).
    FAMILIES: tuple[tuple[str, Callable[[Payloads, str], bytes], int], ...] = (
        ("random", random_bytes, 3),
        ("truncated", truncated, 3),
        ("wrong-type", wrong_type, 3),
        ("deep", deep, 2),
        ("oversized", oversized, 1),
        ("valid", valid, 5),
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def children(pid: int) -> set[int]:
    """The process's children now, from every one of its threads (a job thread's Popen is a thread's child)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


class Watch:
    """Samples the agent's children every few milliseconds on a thread, until ``stop()``."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.pid = pid
        self.every_s = every_s
        self.spawned: set[int] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.spawned |= children(self.pid)
            except OSError:
                return  # the agent is gone: the test says so
            self.samples += 1
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def long_lines(log: str, limit: int = 1024) -> list[str]:
    return [line[:200] for line in log.splitlines() if len(line.encode()) > limit]
