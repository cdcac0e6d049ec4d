"""How much a job may ask of a node: pure checks, shared by piclusterctl's planner and the node (which never trusts
the planner, since anyone who can submit a job can skip it).

- MPI ranks: a grid of P x Q is exactly P x Q ranks, spread evenly over the nodes; each node runs at most one rank
  per core, or with ``oversubscribe`` at most ``jobs.max_ranks_per_core`` per core. Without this a request for
  p = q = 1000 would start a million processes.
- Light jobs (templates marked light, which do not hold the node): at most ``jobs.light_max`` at once.
"""

from __future__ import annotations

from nodeagent.errors import JobRejected


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


def check_light(running: int, light_max: int) -> None:
    """Raise JobRejected unless one more light job may start while ``running`` light jobs run (``jobs.light_max``)."""
    if running >= light_max:
        raise JobRejected(
            f"{running} light job(s) already run on this node, the most jobs.light_max ({light_max}) allows; "
            "wait for one to end",
            "job.kind",
        )
