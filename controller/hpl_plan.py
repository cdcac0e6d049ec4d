"""Choosing HPL sizes for a node from its facts (cores, memory, CPU), with the operator's ``--param`` overrides.

Pure functions: no I/O. The CLI turns the ``ValueError`` messages into usage errors.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from nodeagent.errors import JobRejected
from nodeagent.protocol.jobs import DEFAULT_MAX_RANKS_PER_CORE, HplParams, check_ranks

PARAM_KEYS: tuple[str, ...] = ("n", "nb", "p", "q", "mem_fraction", "ranks_per_node", "oversubscribe")

# Why 0.75 x 0.9 and not top500-benchmark's exact formula: see plan_node's docstring.
DEFAULT_MEM_FRACTION = 0.75 * 0.9
MAX_MEM_FRACTION = 0.95

# A simulated node shares one real machine with all its simulated peers, so planning each one like real hardware
# would start one full-memory, all-core HPL per simulated node on the same host at once: the cores oversubscribed many
# times over and the OOM killer. The sim default is one rank and a ~6000-order matrix (under 300 MB, well under a
# minute per run): small enough for a whole simulated fleet, big enough to exercise the input file, the run,
# progress and the parser for real.
SIM_N = 6000
SIM_NB = 128
SIM_RANKS = 1

_INT_KEYS = ("n", "nb", "p", "q", "ranks_per_node")
_EXAMPLES = {"n": 20000, "nb": 256, "p": 2, "q": 2, "ranks_per_node": 4}
_BYTES_PER_DOUBLE = 8
# The nodes' own limit is their jobs.max_ranks_per_core; the planner refuses early with the default.
MAX_RANKS_PER_CORE = DEFAULT_MAX_RANKS_PER_CORE


def parse_params(items: list[str]) -> dict[str, float | int]:
    """Parse ``--param key=value`` strings into overrides for :func:`plan_node`.

    Keys are ``n``, ``nb``, ``p``, ``q``, ``ranks_per_node`` (positive whole numbers), ``mem_fraction`` (a
    fraction of the node's memory for the matrix, above 0 and at most 0.95) and ``oversubscribe`` (true or false:
    more MPI ranks than cores, up to ``MAX_RANKS_PER_CORE`` per core).
    Raises ``ValueError`` with a message for the operator.
    """
    overrides: dict[str, float | int] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected key=value, e.g. n=20000")
        if key not in PARAM_KEYS:
            raise ValueError(_unknown_key_message(key))
        if key in overrides:
            raise ValueError(f"--param {key} given twice ({overrides[key]} and {raw})")
        overrides[key] = _parse_value(key, raw)
    return overrides


def _unknown_key_message(key: str) -> str:
    # difflib misses abbreviations ("mem"), so a prefix match counts as close too.
    close = difflib.get_close_matches(key.lower(), PARAM_KEYS, n=1) or [
        k for k in PARAM_KEYS if k.startswith(key.lower())
    ]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"--param {key}: unknown HPL parameter{hint}; allowed: {', '.join(PARAM_KEYS)}"


def _parse_value(key: str, raw: str) -> float | int:
    if key == "oversubscribe":
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"--param {key}={raw}: expected true or false")
        return raw.lower() == "true"
    if key in _INT_KEYS:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"--param {key}={raw}: expected a positive whole number, e.g. {key}={_EXAMPLES[key]}")
        return value
    try:
        fraction = float(raw)
    except ValueError:
        fraction = math.nan
    # NaN fails both comparisons, so it lands here too.
    if not 0 < fraction <= MAX_MEM_FRACTION:
        raise ValueError(
            f"--param {key}={raw}: expected a fraction of memory above 0 and at most {MAX_MEM_FRACTION}, e.g. {key}=0.7"
        )
    return fraction


def nb_for_cpu(cpu: str) -> int:
    """The HPL block size that suits the CPU: 256 on Cortex-A76 (CM5, Pi 5), 192 on Cortex-A72 (CM4), else 128.

    256 is what top500-benchmark uses on the Pi 5; 192 is what published CM4 cluster runs used. ``cpu`` may be a
    model name ("Cortex-A76") or an ARM part number from /proc/cpuinfo ("0xd0b").
    """
    name = cpu.lower().replace("-", "").replace(" ", "")
    if "cortexa76" in name or "0xd0b" in name:
        return 256
    if "cortexa72" in name or "0xd08" in name:
        return 192
    return 128


def grid(ranks: int) -> tuple[int, int]:
    """The process grid (P, Q) with P x Q = ``ranks``, as square as possible and P <= Q (HPL prefers flat-ish grids).

    A prime number of ranks can only be 1 x ranks.
    """
    if ranks < 1:
        raise ValueError(f"an HPL grid needs at least 1 rank, got {ranks}")
    p = math.isqrt(ranks)
    while ranks % p:
        p -= 1
    return p, ranks // p


def plan_node(*, cores: int, memory_mb: int, cpu: str, sim: bool, overrides: Mapping[str, float | int]) -> HplParams:
    """The HPL problem for one node: the largest N that fits its memory, NB for its CPU, one rank per core.

    ``memory_mb`` is the node's MemTotal in MiB (as /proc/meminfo and Ansible report it). N is
    floor(sqrt(memory_bytes x mem_fraction / 8)) rounded down to a multiple of NB, so the matrix of 8-byte doubles
    fits in ``mem_fraction`` of memory. P x Q comes from :func:`grid`.

    The default ``mem_fraction`` is 0.75 x 0.9 = 0.675. top500-benchmark takes 75 % of RAM rounded down to whole
    GiB and then 0.9 of the resulting N, which leaves its matrix at 0.75 x 0.81 ~ 0.61 of memory before the rounding
    and ~0.52 after it on an 8 GB board (N=23314). We apply both factors to memory instead and skip the rounding:
    a CM5 8 GB gets N=26624 (a 5.3 GiB matrix, 67 %), for a few percent more Gflops, and still keeps a third of RAM
    for the OS, the agent and MPI buffers. Going towards the textbook 80 % invites the OOM killer on swap-less
    2-4 GB nodes (top500-benchmark issue #98).

    A simulated node (``sim``) gets a small problem on one rank instead (see ``SIM_N``), unless overridden; an
    explicit ``mem_fraction`` brings back the memory-based N.

    Every value can be overridden (keys of :data:`PARAM_KEYS`). If only one of ``p``/``q`` is given, the other is
    ``cores`` divided by it. Raises ``ValueError`` when the result would be rejected by the node.
    """
    if cores < 1 or memory_mb < 1:
        raise ValueError(f"node facts look wrong: cores={cores}, memory_mb={memory_mb}; both must be at least 1")
    nb = int(overrides.get("nb", SIM_NB if sim else nb_for_cpu(cpu)))
    n = int(overrides["n"]) if "n" in overrides else _default_n(memory_mb, nb, sim, overrides)
    ranks = int(overrides.get("ranks_per_node", SIM_RANKS if sim else cores))
    p, q = _grid_with_overrides(cores, ranks, overrides)
    params = HplParams(n=n, nb=nb, p=p, q=q)
    try:
        params.validate()
        check_ranks(
            p=p,
            q=q,
            nodes=1,
            ranks_per_node=p * q,
            cores=cores,
            oversubscribe=bool(overrides.get("oversubscribe", False)),
            max_ranks_per_core=MAX_RANKS_PER_CORE,
        )
    except JobRejected as exc:
        raise ValueError(str(exc)) from exc
    return params


def _default_n(memory_mb: int, nb: int, sim: bool, overrides: Mapping[str, float | int]) -> int:
    if sim and "mem_fraction" not in overrides:
        return SIM_N // nb * nb
    fraction = float(overrides.get("mem_fraction", DEFAULT_MEM_FRACTION))
    matrix_bytes = int(memory_mb * 1024 * 1024 * fraction)
    return math.isqrt(matrix_bytes // _BYTES_PER_DOUBLE) // nb * nb


def _grid_with_overrides(cores: int, ranks: int, overrides: Mapping[str, float | int]) -> tuple[int, int]:
    p, q = overrides.get("p"), overrides.get("q")
    if p is not None and q is not None:
        return int(p), int(q)
    if p is not None:
        return int(p), _other_side(cores, "p", int(p))
    if q is not None:
        return _other_side(cores, "q", int(q)), int(q)
    return grid(ranks)


def _other_side(cores: int, given_name: str, given: int) -> int:
    """The grid side that makes P x Q = cores when the operator fixed only one side."""
    if given < 1 or cores % given:
        other_name = "q" if given_name == "p" else "p"
        raise ValueError(
            f"{given_name}={given} does not divide the node's {cores} cores, so {other_name} cannot be derived "
            f"from it; give both p and q"
        )
    return cores // given


# ---------------------------------------------------------------------------------------------------------------------
# One HPL over the whole selection (the default of `piclusterctl run hpl`)


@dataclass(frozen=True)
class NodeSize:
    """What the cluster plan needs of one node (from its retained facts)."""

    name: str
    cores: int
    memory_mb: int
    cpu: str = ""
    sim: bool = False


@dataclass(frozen=True)
class ClusterPlan:
    """One HPL run over ``nodes``: N/NB, the P x Q grid over every rank, and who launches it (``leader``)."""

    n: int
    nb: int
    p: int
    q: int
    nodes: tuple[str, ...]
    ranks_per_node: int
    leader: str
    smallest_node: str  # the node with the least memory
    mem_fraction: float
    n_from: str = ""  # where N came from, for the operator
    oversubscribe: bool = False  # more ranks per node than cores (the operator's --param oversubscribe=true)

    @property
    def ranks(self) -> int:
        return self.p * self.q

    @property
    def slots(self) -> int:
        """Ranks the host file offers (``ranks_per_node`` on every node); P x Q may use fewer when overridden."""
        return self.ranks_per_node * len(self.nodes)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "nodes": list(self.nodes), "ranks": self.ranks}


def plan_cluster(sizes: Sequence[NodeSize], overrides: Mapping[str, float | int]) -> ClusterPlan:
    """The HPL problem for one run over every node in ``sizes`` (the first is the leader that runs mpirun).

    * N: each node holds an equal share of the matrix, so the *smallest* node's memory sets it:
      N = sqrt(min_memory x mem_fraction x nodes / 8), rounded down to a multiple of NB. (top500-benchmark sizes
      from the first node's memory and runs out of memory on a mixed cluster, its issue #98.)
    * NB: :func:`nb_for_cpu`, the smallest over the nodes when their CPUs differ.
    * ranks: ``ranks_per_node`` on every node, by default the fewest cores any node has (1 on a simulated node).
    * P x Q: :func:`grid` over all the ranks, as square as possible with P <= Q (top500-benchmark leaves 1 x 4).

    Every value can be overridden; raises ``ValueError`` with a message for the operator.
    """
    if not sizes:
        raise ValueError("no nodes to plan HPL for")
    for s in sizes:
        if s.cores < 1 or s.memory_mb < 1:
            raise ValueError(f"node {s.name}: facts look wrong: cores={s.cores}, memory_mb={s.memory_mb}")
    sim = any(s.sim for s in sizes)
    smallest = min(sizes, key=lambda s: s.memory_mb)
    nb = int(overrides.get("nb", SIM_NB if sim else min(nb_for_cpu(s.cpu) for s in sizes)))
    per_node = int(overrides.get("ranks_per_node", SIM_RANKS if sim else min(s.cores for s in sizes)))
    fraction = float(overrides.get("mem_fraction", DEFAULT_MEM_FRACTION))
    n_from = f"{smallest.name}'s memory (mem_fraction {fraction:g})"
    if "n" in overrides:
        n, n_from = int(overrides["n"]), "--param n"
    elif sim and "mem_fraction" not in overrides:
        n, n_from = SIM_N // nb * nb, "the simulated nodes' small default"
    else:
        matrix_bytes = int(smallest.memory_mb * 1024 * 1024 * fraction) * len(sizes)
        n = math.isqrt(matrix_bytes // _BYTES_PER_DOUBLE) // nb * nb
    slots = per_node * len(sizes)
    p, q = _grid_with_overrides(slots, slots, overrides)
    fewest = min(sizes, key=lambda s: s.cores)
    oversubscribe = bool(overrides.get("oversubscribe", False))
    try:
        HplParams(n=n, nb=nb, p=p, q=q).validate()
        check_ranks(
            p=p,
            q=q,
            nodes=len(sizes),
            ranks_per_node=per_node,
            cores=fewest.cores,
            oversubscribe=oversubscribe,
            max_ranks_per_core=MAX_RANKS_PER_CORE,
            where=f"node {fewest.name}",
        )
    except JobRejected as exc:
        raise ValueError(str(exc)) from exc
    return ClusterPlan(
        n=n,
        nb=nb,
        p=p,
        q=q,
        nodes=tuple(s.name for s in sizes),
        ranks_per_node=per_node,
        leader=sizes[0].name,
        smallest_node=smallest.name,
        mem_fraction=fraction,
        n_from=n_from,
        oversubscribe=oversubscribe,
    )
