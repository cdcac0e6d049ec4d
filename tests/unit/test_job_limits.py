"""What a job may ask of a node: MPI ranks per core and grids that match their ranks (nodeagent/protocol/jobs.py),
light jobs at once (nodeagent/jobs/limits.py); and every kind refuses parameters it does not declare, naming the
field. The node checks all of it itself: a request need not come from piclusterctl's planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.config import JobsSection, MpiSection
from nodeagent.errors import JobRejected
from nodeagent.jobs.kind import JobContext, JobKind
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.kinds.template import TemplateKind
from nodeagent.jobs.limits import check_light
from nodeagent.jobs.params import ParamSpec
from nodeagent.jobs.template_config import JobTemplate
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.control import ControlDir
from nodeagent.protocol.jobs import check_ranks, rank_limit

HPL = {"n": 1000, "nb": 100, "p": 1, "q": 2}


def ctx(tmp_path: Path, cores: int = 4, **cfg: Any) -> JobContext:
    return JobContext("j1", tmp_path, cores=cores, sim=True, cfg=JobsSection(**cfg))


NOWHERE = Path("/proc/picluster-no-control")  # a refused member writes nothing: writing here would fail


def hpl(control: Path = NOWHERE) -> ClusterHplKind:
    """The hpl kind the agent runs: single node, leader or member."""
    return ClusterHplKind(MpiSection(), control=ControlDir(control))


# --- every kind: undeclared parameters ----------------------------------------------------------------------------

TEMPLATE = TemplateKind(JobTemplate("echo", ("echo", "{word}"), {"word": ParamSpec("str", "hi")}))
VALID: list[tuple[str, JobKind, dict[str, Any]]] = [
    ("hpl", hpl(), HPL),
    ("hpl leader", hpl(), {**HPL, "role": "leader", "hosts": "a,b", "ranks_per_node": 1}),
    ("hpl member", hpl(), {**HPL, "role": "member", "leader": "a", "ranks_per_node": 1}),
    ("stress", KINDS["stress"], {}),
    ("llama-bench", KINDS["llama-bench"], {}),
    ("llama-rpc worker", KINDS["llama-rpc"], {"role": "worker"}),
    ("llama-rpc leader", KINDS["llama-rpc"], {"role": "leader"}),
    ("dllama worker", KINDS["dllama"], {"role": "worker"}),
    ("dllama root", KINDS["dllama"], {"role": "root"}),
    ("template", TEMPLATE, {}),
]


@pytest.mark.parametrize(("what", "kind", "params"), VALID, ids=[v[0] for v in VALID])
def test_every_kind_refuses_an_undeclared_parameter_naming_it(
    tmp_path: Path, what: str, kind: JobKind, params: dict[str, Any]
) -> None:
    with pytest.raises(JobRejected, match="unknown parameter 'threads_typo'") as caught:
        kind.prepare({**params, "threads_typo": 4}, ctx(tmp_path))
    assert caught.value.field == "params.threads_typo"


def test_single_node_hpl_does_not_take_cluster_parameters(tmp_path: Path) -> None:
    for name, value in (("hosts", "a,b"), ("leader", "a"), ("ranks_per_node", 2)):
        with pytest.raises(JobRejected, match=f"hpl: unknown parameter '{name}'"):
            hpl().prepare({**HPL, name: value}, ctx(tmp_path))
    with pytest.raises(JobRejected, match="cluster HPL member: unknown parameter 'hosts'"):
        hpl().prepare({"role": "member", "leader": "a", "hosts": "a,b"}, ctx(tmp_path))


# --- ranks -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "cores", "why", "field"),
    [
        ({**HPL, "p": 1000, "q": 1000}, 4, "a 1000 x 1000 grid puts 1000000 MPI ranks on this node", "params.p"),
        ({**HPL, "p": 2, "q": 3}, 4, "one per core; --param oversubscribe=true allows up to 4 per core", "params.p"),
        ({**HPL, "p": 5, "q": 4, "oversubscribe": True}, 4, "at most 4 per core even with oversubscribe", "params.p"),
        ({**HPL, "oversubscribe": "maybe"}, 4, "'oversubscribe': expected true or false", "params.oversubscribe"),
    ],
)
def test_a_single_node_grid_beyond_the_cores_is_refused(
    tmp_path: Path, params: dict[str, Any], cores: int, why: str, field: str
) -> None:
    with pytest.raises(JobRejected, match=why) as caught:
        hpl().prepare(params, ctx(tmp_path, cores=cores))
    assert caught.value.field == field
    assert not (tmp_path / "hpccinf.txt").exists()  # refused before anything was written


def test_oversubscribe_lets_a_grid_use_up_to_the_configured_ranks_per_core(tmp_path: Path) -> None:
    prepared = hpl().prepare({**HPL, "p": 4, "q": 4, "oversubscribe": "true"}, ctx(tmp_path))
    assert prepared.argv[prepared.argv.index("-np") + 1] == "16"
    with pytest.raises(JobRejected, match="at most 2 per core"):
        hpl().prepare({**HPL, "p": 3, "q": 3, "oversubscribe": True}, ctx(tmp_path, max_ranks_per_core=2))


def test_a_leader_refuses_a_grid_that_is_not_its_hosts_ranks(tmp_path: Path) -> None:
    leader = {**HPL, "role": "leader", "hosts": "a,b", "ranks_per_node": 1}
    with pytest.raises(JobRejected, match="p x q must equal the ranks"):
        hpl().prepare({**leader, "p": 1000, "q": 1000}, ctx(tmp_path))
    with pytest.raises(JobRejected, match="p x q must equal the ranks"):
        hpl().prepare({**leader, "p": 1, "q": 1}, ctx(tmp_path))
    with pytest.raises(JobRejected, match="8 ranks per node puts 8 MPI ranks on this node, which has 4 cores"):
        hpl().prepare({**leader, "p": 4, "q": 4, "ranks_per_node": 8}, ctx(tmp_path))


def test_a_member_refuses_more_ranks_per_node_than_its_own_cores(tmp_path: Path) -> None:
    member = {"role": "member", "leader": "a", "ranks_per_node": 8}
    with pytest.raises(JobRejected, match="the leader's ranks_per_node puts 8 MPI ranks on this node") as caught:
        hpl().prepare(member, ctx(tmp_path, cores=4))
    assert caught.value.field == "params.ranks_per_node"
    hpl(tmp_path / "control").prepare({**member, "oversubscribe": True}, ctx(tmp_path, cores=4))


@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 16), st.integers(1, 16), st.integers(1, 8), st.booleans())
def test_check_ranks_accepts_exactly_the_grids_that_fit(
    p: int, q: int, nodes: int, per_node: int, cores: int, over: bool
) -> None:
    fits = p * q == nodes * per_node and per_node <= cores * (4 if over else 1)
    try:
        check_ranks(
            p=p, q=q, nodes=nodes, ranks_per_node=per_node, cores=cores, oversubscribe=over, max_ranks_per_core=4
        )
    except JobRejected as exc:
        assert not fits and exc.field in ("params.p", "params.ranks_per_node")
    else:
        assert fits
    assert rank_limit(cores, oversubscribe=over, max_ranks_per_core=4) == cores * (4 if over else 1)


# --- light jobs ----------------------------------------------------------------------------------------------


def test_light_jobs_are_counted_against_light_max() -> None:
    check_light(0, 2)
    check_light(1, 2)
    with pytest.raises(JobRejected, match=r"2 light job\(s\) already run on this node, the most jobs.light_max \(2\)"):
        check_light(2, 2)
