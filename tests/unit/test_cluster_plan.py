"""One HPL over several nodes: the plan (controller/hpl_plan.plan_cluster), the job and the telemetry summary."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.cluster_run import cluster_job
from controller.hpl_plan import DEFAULT_MEM_FRACTION, NodeSize, plan_cluster
from controller.recorder import Recorder
from nodeagent.protocol import Telemetry

MIB = 1024 * 1024


def cm5(name: str, memory_mb: int = 8053) -> NodeSize:
    return NodeSize(name, cores=4, memory_mb=memory_mb, cpu="Cortex-A76")


def test_eight_cm5_nodes_use_all_32_ranks_in_a_4_x_8_grid() -> None:
    plan = plan_cluster([cm5(f"n{i}") for i in range(1, 9)], {})
    assert (plan.p, plan.q, plan.ranks, plan.nb) == (4, 8, 32, 256)  # not top500-benchmark's 1 x 4
    assert plan.leader == "n1" and plan.ranks_per_node == 4


def test_the_smallest_node_sizes_n_on_a_mixed_cluster() -> None:
    plan = plan_cluster([cm5("big", 16215), cm5("small", 4045), cm5("mid", 8053)], {})
    assert plan.smallest_node == "small" and plan.n_from == "small's memory (mem_fraction 0.675)"
    per_node_bytes = plan.n**2 * 8 / 3
    assert per_node_bytes <= 4045 * MIB * DEFAULT_MEM_FRACTION  # fits the small node's share
    assert plan.n % 256 == 0


@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(512, 65536)), min_size=1, max_size=40),
    st.sampled_from(["Cortex-A76", "Cortex-A72", "x86"]),
)
def test_the_plan_always_fits_the_smallest_node_and_uses_every_rank(nodes: list[tuple[int, int]], cpu: str) -> None:
    sizes = [NodeSize(f"n{i}", c, m, cpu) for i, (c, m) in enumerate(nodes)]
    try:
        plan = plan_cluster(sizes, {})
    except ValueError as exc:  # only when the smallest node is too small for even one block
        assert "must not be larger than n" in str(exc)
        return
    smallest = min(m for _, m in nodes)
    assert plan.n % plan.nb == 0
    assert plan.n**2 * 8 / len(nodes) <= smallest * MIB * DEFAULT_MEM_FRACTION
    # the largest multiple of NB that fits: one more block would not
    assert plan.n + plan.nb > math.isqrt(int(smallest * MIB * DEFAULT_MEM_FRACTION) * len(nodes) // 8)
    assert plan.ranks == min(c for c, _ in nodes) * len(nodes)
    assert 1 <= plan.p <= plan.q and plan.p == max(
        d for d in range(1, math.isqrt(plan.ranks) + 1) if plan.ranks % d == 0
    )


def test_every_value_can_be_overridden() -> None:
    plan = plan_cluster([cm5("a"), cm5("b")], {"n": 5000, "nb": 100, "ranks_per_node": 1, "p": 1, "q": 2})
    assert (plan.n, plan.nb, plan.p, plan.q, plan.ranks_per_node) == (5000, 100, 1, 2, 1)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"p": 3, "q": 3}, r"a 3 x 3 grid is 9 MPI ranks, but 2 node\(s\) x 4 rank\(s\) start 8"),
        ({"p": 1, "q": 2}, "p x q must equal the ranks"),  # fewer ranks than slots: a node would sit idle
        ({"p": 1000, "q": 1000}, "a 1000 x 1000 grid is 1000000 MPI ranks"),
        ({"ranks_per_node": 8}, "8 ranks per node puts 8 MPI ranks on node a, which has 4 cores: one per core"),
        ({"ranks_per_node": 17, "oversubscribe": True}, "at most 4 per core even with oversubscribe=true"),
    ],
)
def test_a_grid_that_is_not_the_nodes_ranks_or_overfills_them_is_refused(overrides: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        plan_cluster([cm5("a"), cm5("b")], overrides)


def test_oversubscribe_allows_more_ranks_than_cores_and_reaches_every_node() -> None:
    plan = plan_cluster([cm5("a"), cm5("b")], {"ranks_per_node": 8, "oversubscribe": True})
    assert (plan.p, plan.q, plan.oversubscribe) == (4, 4, True)
    assert cluster_job(plan, "j1", timeout_s=60, force=False).params["oversubscribe"] is True
    assert "oversubscribe" not in cluster_job(plan_cluster([cm5("a")], {}), "j2", timeout_s=60, force=False).params


def test_simulated_nodes_get_one_rank_and_a_small_problem() -> None:
    plan = plan_cluster([NodeSize("a", 4, 4000, "", sim=True), NodeSize("b", 4, 4000, "", sim=True)], {})
    assert (plan.ranks_per_node, plan.p, plan.q, plan.n) == (1, 1, 2, 5888)


def test_the_job_gives_the_leader_the_hosts_and_the_members_the_leader() -> None:
    plan = plan_cluster([cm5("a"), cm5("b"), cm5("c")], {})
    job = cluster_job(plan, "j1", timeout_s=60, force=False)
    assert job.params_for("a") == {**job.params, "role": "leader", "hosts": "a,b,c"}
    assert job.params_for("c")["role"] == "member" and job.params_for("c")["leader"] == "a"
    assert job.params["ranks_per_node"] == 4


def _t(node: str, t: float, temp: float | None, power: float | None, throttled: int = 0) -> Telemetry:
    return Telemetry(node=node, seq=int(t), t=t, temp_c=temp, power_w=power, throttled=throttled)


def test_the_recorder_sums_power_over_nodes_and_flags_throttling() -> None:
    rec = Recorder(("a", "b"))
    rec.feed("a", _t("a", 1, 50.0, 5.0))
    rec.feed("b", _t("b", 1, 60.0, 7.0, throttled=0x50000))  # only "occurred" bits: not throttled now
    rec.feed("a", _t("a", 2, 55.0, 6.0, throttled=0x4))  # throttled now
    rec.feed("x", _t("x", 2, 99.0, 50.0))  # not in the job
    s = rec.summary()
    assert s["power_avg_w"] == pytest.approx(5.5 + 7.0)
    assert s["power_peak_w"] == pytest.approx(13.0)
    assert s["temp_peak_c"] == 60.0
    assert s["throttled"] == {"a": True, "b": False}


def test_the_recorder_without_power_says_unknown() -> None:
    rec = Recorder(("a",))
    rec.feed("a", _t("a", 1, None, None))
    assert rec.summary() == {
        "power_avg_w": None,
        "power_peak_w": None,
        "temp_peak_c": None,
        "temp_peak_by_node": {"a": None},
        "throttled": {"a": False},
    }
