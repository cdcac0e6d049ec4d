"""What the built-in job kinds take and give on the wire, shared by the agent's kinds and piclusterctl: HPL's
parameters and result, and the parameters each role of the cluster inference jobs takes.

The agent's kinds (``nodeagent/jobs/kinds/``) hold the full declarations (types, limits, defaults) and check
every value; these are the names and rules the controller must agree with to split and plan a job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.errors import JobRejected


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
                raise JobRejected(f"{name} must be a whole number, got {value!r}", field=name)
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
