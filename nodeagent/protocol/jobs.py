"""What the built-in job kinds take and give on the wire, shared by the agent's kinds and piclusterctl: HPL's
parameters, result and rank limits, and the parameters each role of the cluster inference jobs takes.

The agent's kinds (``nodeagent/jobs/kinds/``) hold the full declarations (types, limits, defaults) and check
every value; these are the names and rules the controller must agree with to split and plan a job.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.errors import JobRejected, echo


@dataclass(frozen=True)
class HplParams:
    """One HPL problem: matrix order ``n``, block size ``nb`` and a ``p`` x ``q`` process grid (one MPI rank each)."""

    n: int
    nb: int
    p: int
    q: int

    @property
    def ranks(self) -> int:
        """The number of MPI ranks the grid needs (``mpirun -np``)."""
        return self.p * self.q

    def validate(self) -> None:
        """Raise :class:`JobRejected` naming the first field HPL would refuse or silently replace."""
        for name in ("n", "nb", "p", "q"):
            value = getattr(self, name)
            # bool is an int subclass; a JSON/msgpack `true` must not pass for the number 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise JobRejected(f"{name} must be a whole number, got {echo(value)}", field=name)
            if value < 1:
                raise JobRejected(f"{name} must be at least 1, got {value}", field=name)
        if self.nb > self.n:
            raise JobRejected(f"nb ({self.nb}) must not be larger than n ({self.n})", field="nb")


@dataclass(frozen=True)
class HplResult:
    """What one HPL run measured.

    ``gflops`` is the solve rate; ``residual`` the scaled residual HPL checks against 16.0 (``None`` if no check was
    printed); ``passed`` is true only when the check says PASSED (and, for hpcc, the run reported ``Success=1``);
    ``variant`` is HPL's T/V code, e.g. ``WR11C2R4``.
    """

    gflops: float
    n: int
    nb: int
    p: int
    q: int
    time_s: float
    residual: float | None
    passed: bool
    variant: str = ""

    def to_dict(self) -> dict[str, object]:
        """The result as plain values, ready for the wire."""
        return dataclasses.asdict(self)

    @classmethod
    def fields_of(cls, result: Mapping[str, Any]) -> dict[str, Any]:
        """The HPL figures of any result carrying them (a node's, a cluster's leader's), missing ones as None."""
        return {f.name: result.get(f.name) for f in dataclasses.fields(cls)}


# MPI ranks: a grid of P x Q is exactly P x Q ranks, spread evenly over the nodes; each node runs at most one rank
# per core, or with ``oversubscribe`` at most ``jobs.max_ranks_per_core`` per core. piclusterctl's planner and every
# node check it (a node never trusts the planner: a request need not come from it). Without it a request for
# p = q = 1000 would start a million processes.
DEFAULT_MAX_RANKS_PER_CORE = 4


def rank_limit(cores: int, *, oversubscribe: bool, max_ranks_per_core: int) -> int:
    """The most MPI ranks a node with ``cores`` cores runs."""
    return cores * (max_ranks_per_core if oversubscribe else 1)


def check_ranks(
    *,
    p: int,
    q: int,
    nodes: int,
    ranks_per_node: int,
    cores: int,
    oversubscribe: bool,
    max_ranks_per_core: int,
    where: str = "this node",
) -> None:
    """Raise JobRejected (naming the field and the fix) unless a ``p`` x ``q`` grid is ``nodes`` x
    ``ranks_per_node`` ranks and ``ranks_per_node`` fits ``cores`` (``where`` names whose cores, for messages)."""
    ranks = p * q
    if ranks != nodes * ranks_per_node:
        raise JobRejected(
            f"a {p} x {q} grid is {ranks} MPI ranks, but {nodes} node(s) x {ranks_per_node} rank(s) start "
            f"{nodes * ranks_per_node}: p x q must equal the ranks (change p and q, or ranks_per_node)",
            "params.p",
        )
    what = f"a {p} x {q} grid" if nodes == 1 else f"{ranks_per_node} ranks per node"
    check_node_ranks(
        ranks_per_node,
        cores=cores,
        oversubscribe=oversubscribe,
        max_ranks_per_core=max_ranks_per_core,
        what=what,
        where=where,
        field="params.p" if nodes == 1 else "params.ranks_per_node",
    )


def check_node_ranks(
    ranks: int,
    *,
    cores: int,
    oversubscribe: bool,
    max_ranks_per_core: int,
    what: str = "the job",
    where: str = "this node",
    field: str = "params.ranks_per_node",
) -> None:
    """Raise JobRejected unless ``ranks`` MPI ranks fit a node of ``cores`` cores (see :func:`rank_limit`)."""
    if ranks <= rank_limit(cores, oversubscribe=oversubscribe, max_ranks_per_core=max_ranks_per_core):
        return
    if oversubscribe:
        fix = f"at most {max_ranks_per_core} per core even with oversubscribe=true (jobs.max_ranks_per_core)"
    else:
        fix = f"one per core; --param oversubscribe=true allows up to {max_ranks_per_core} per core"
    raise JobRejected(f"{what} puts {ranks} MPI ranks on {where}, which has {cores} cores: {fix}", field)


# The parameters of each role of the cluster inference jobs (``llama-rpc``, ``dllama``): the controller sends each
# role only its own (nodeagent/jobs/kinds/llm.py declares them; a unit test keeps the two in step).
BENCH_KEYS = ("model", "n_prompt", "n_gen", "repetitions", "threads")
RPC_WORKER_KEYS = ("role", "port", "threads")
RPC_LEADER_KEYS = (*BENCH_KEYS, "role", "rpc")
DLLAMA_WORKER_KEYS = ("role", "port", "threads")
DLLAMA_ROOT_KEYS = (
    "role",
    "model",
    "tokenizer",
    "prompt",
    "steps",
    "max_seq_len",
    "buffer_float_type",
    "workers",
    "kv_heads",
    "threads",
)


def dllama_nodes_problem(nodes: int, kv_heads: int) -> str | None:
    """Why distributed-llama cannot run on ``nodes`` nodes (root included), or None. It splits the model's KV
    heads evenly: the node count must be a power of two and at most the KV heads (its README, src/app.cpp)."""
    if nodes < 1 or nodes & (nodes - 1):
        below = 1 << (max(nodes, 1).bit_length() - 1)
        return f"distributed-llama runs on 1, 2, 4, 8 ... nodes (a power of two), not {nodes}; use {below}"
    if nodes > kv_heads:
        return f"distributed-llama runs on at most as many nodes as the model has KV heads ({kv_heads}), not {nodes}"
    return None


# distcc (``distcc`` kind): distccd on the workers, make on the leader with DISTCC_HOSTS naming them.
DISTCC_WORKER_KEYS = ("role", "port", "allow", "leader", "slots")
DISTCC_LEADER_KEYS = ("role", "dir", "target", "cc", "jobs", "hosts")
DISTCC_PORT = 3632  # distccd's own default
MAX_TARGETS = 32
MAX_PEERS = 256
_TARGET_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]{0,127}")
_CC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_HOST_ENTRY = re.compile(r"(localhost|(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5}))/(\d{1,4})")


def make_targets(text: str) -> list[str]:
    """The make goals in ``text`` (space-separated); ValueError naming the first that is not a plain target name:
    no option (``-``), no variable (``=``), no shell or make syntax, no ``..`` component."""
    words = text.split()
    if len(words) > MAX_TARGETS:
        raise ValueError(f"at most {MAX_TARGETS} targets, got {len(words)}")
    for word in words:
        if not _TARGET_WORD.fullmatch(word) or ".." in word.split("/"):
            raise ValueError(
                f"{word!r} is not a make target name (letters, digits, '_', '.', '+', '/', '-'; "
                "not starting with '-', no '..')"
            )
    return words


def compiler_name(text: str) -> str:
    """A compiler to find on PATH (``gcc``, ``aarch64-linux-gnu-gcc``, ``clang-14``): a name, never a path."""
    if not _CC_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a compiler name (letters, digits, '_', '.', '+', '-'; no path)")
    return text


def ipv4_list(text: str) -> list[str]:
    """Comma-separated IPv4 addresses, in order, without duplicates; ValueError naming a bad one."""
    out: list[str] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            addr = str(ipaddress.IPv4Address(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 address") from None
        if addr not in out:
            out.append(addr)
    if len(out) > MAX_PEERS:
        raise ValueError(f"at most {MAX_PEERS} addresses, got {len(out)}")
    return out


def distcc_hosts(text: str) -> list[tuple[str, int]]:
    """A DISTCC_HOSTS list as this kind writes it: ``localhost/N`` and ``A.B.C.D:PORT/N`` entries, space-separated.
    Returns (``localhost`` or ``A.B.C.D:PORT``, N) each; ValueError naming a bad entry."""
    out = []
    entries = text.split()
    if not entries or len(entries) > MAX_PEERS:
        raise ValueError(f"expected 1 to {MAX_PEERS} hosts, got {len(entries)}")
    for entry in entries:
        m = _HOST_ENTRY.fullmatch(entry)
        ok = m is not None and 1 <= int(m.group(4)) <= 1024
        if m is not None and m.group(2):
            ok = ok and 1 <= int(m.group(3)) <= 65535 and _is_ipv4(m.group(2))
        if not ok or m is None:
            raise ValueError(f"{entry!r} is not localhost/N or A.B.C.D:PORT/N")
        out.append((m.group(1), int(m.group(4))))
    return out


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
