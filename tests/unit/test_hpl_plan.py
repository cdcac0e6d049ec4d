"""Sizing HPL for a node (controller/hpl_plan.py): grids, N from memory, overrides and --param parsing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.hpl_plan import (
    DEFAULT_MEM_FRACTION,
    PARAM_KEYS,
    grid,
    nb_for_cpu,
    parse_params,
    plan_node,
)
from nodeagent.protocol.jobs import HplParams

MIB = 1024 * 1024
CM5_8GB = {"cores": 4, "memory_mb": 8053, "cpu": "Cortex-A76"}


# ---------------------------------------------------------------------------------------------------------------------
# grid()


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [(1, (1, 1)), (2, (1, 2)), (4, (2, 2)), (6, (2, 3)), (7, (1, 7)), (8, (2, 4)), (16, (4, 4)), (40, (5, 8))],
)
def test_grid_examples(ranks: int, expected: tuple[int, int]) -> None:
    assert grid(ranks) == expected


@given(st.integers(1, 100_000))
def test_grid_is_the_squarest_factorisation(ranks: int) -> None:
    p, q = grid(ranks)
    assert p * q == ranks
    assert 1 <= p <= q
    # no factor pair lies between p and sqrt(ranks), so none is squarer
    assert not any(ranks % d == 0 for d in range(p + 1, math.isqrt(ranks) + 1))


@pytest.mark.parametrize("ranks", [0, -4])
def test_grid_needs_a_rank(ranks: int) -> None:
    with pytest.raises(ValueError, match="at least 1 rank"):
        grid(ranks)


# ---------------------------------------------------------------------------------------------------------------------
# nb_for_cpu()


@pytest.mark.parametrize(
    ("cpu", "nb"),
    [
        ("Cortex-A76", 256),
        ("ARM Cortex-A76", 256),
        ("cortex-a76", 256),
        ("0xd0b", 256),
        ("Cortex-A72", 192),
        ("0xd08", 192),
        ("Cortex-A53", 128),
        ("Intel(R) Core(TM) i7", 128),
        ("", 128),
    ],
)
def test_nb_for_cpu(cpu: str, nb: int) -> None:
    assert nb_for_cpu(cpu) == nb


# ---------------------------------------------------------------------------------------------------------------------
# plan_node()


def matrix_bytes(params: HplParams) -> int:
    return 8 * params.n * params.n


def test_plan_cm5_8gb() -> None:
    params = plan_node(**CM5_8GB, sim=False, overrides={})
    assert (params.nb, params.p, params.q) == (256, 2, 2)
    assert params.n % 256 == 0
    budget = DEFAULT_MEM_FRACTION * 8053 * MIB
    assert matrix_bytes(params) <= budget
    assert 8 * (params.n + 256) ** 2 > budget  # the largest multiple of NB that fits
    assert params.n == 26624


@given(
    cores=st.integers(1, 256),
    memory_mb=st.integers(512, 1_048_576),
    cpu=st.sampled_from(["Cortex-A76", "Cortex-A72", "Cortex-A53"]),
    mem_fraction=st.one_of(st.none(), st.floats(0.05, 0.95)),
)
def test_plan_fits_memory_and_uses_every_core(cores: int, memory_mb: int, cpu: str, mem_fraction: float | None) -> None:
    overrides = {} if mem_fraction is None else {"mem_fraction": mem_fraction}
    params = plan_node(cores=cores, memory_mb=memory_mb, cpu=cpu, sim=False, overrides=overrides)
    fraction = DEFAULT_MEM_FRACTION if mem_fraction is None else mem_fraction
    assert params.nb == nb_for_cpu(cpu)
    assert params.n % params.nb == 0
    assert matrix_bytes(params) <= fraction * memory_mb * MIB
    assert (params.p, params.q) == grid(cores)


def test_plan_sim_is_small_and_single_rank() -> None:
    params = plan_node(**CM5_8GB, sim=True, overrides={})
    assert params == HplParams(n=5888, nb=128, p=1, q=1)  # 6000 rounded down to a multiple of 128


def test_plan_sim_overrides() -> None:
    assert plan_node(**CM5_8GB, sim=True, overrides={"n": 3000}).n == 3000
    assert plan_node(**CM5_8GB, sim=True, overrides={"nb": 200}).n == 6000
    assert plan_node(**CM5_8GB, sim=True, overrides={"p": 2}) == HplParams(n=5888, nb=128, p=2, q=2)
    # an explicit memory fraction brings back the memory-based size
    params = plan_node(**CM5_8GB, sim=True, overrides={"mem_fraction": 0.1})
    assert params.n == math.isqrt(int(0.1 * 8053 * MIB) // 8) // 128 * 128


def test_plan_overrides() -> None:
    assert plan_node(**CM5_8GB, sim=False, overrides={"n": 10000}) == HplParams(n=10000, nb=256, p=2, q=2)
    by_nb = plan_node(**CM5_8GB, sim=False, overrides={"nb": 192})
    assert by_nb.nb == 192 and by_nb.n % 192 == 0 and by_nb.n > 26624
    assert plan_node(**CM5_8GB, sim=False, overrides={"p": 1}).q == 4
    assert plan_node(**CM5_8GB, sim=False, overrides={"q": 4}).p == 1
    with_more = {"p": 3, "q": 5, "oversubscribe": True}
    assert plan_node(**CM5_8GB, sim=False, overrides=with_more) == HplParams(n=26624, nb=256, p=3, q=5)
    smaller = plan_node(**CM5_8GB, sim=False, overrides={"mem_fraction": 0.5})
    assert smaller.n < 26624 and matrix_bytes(smaller) <= 0.5 * 8053 * MIB


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"p": 3}, "p=3 does not divide the node's 4 cores, so q cannot be derived from it; give both p and q"),
        ({"q": 3}, "q=3 does not divide the node's 4 cores, so p cannot be derived from it; give both p and q"),
        ({"n": 100}, r"nb \(256\) must not be larger than n \(100\)"),
        ({"mem_fraction": 1e-9}, "n must be at least 1, got 0"),
        ({"p": 1000, "q": 1000}, "a 1000 x 1000 grid puts 1000000 MPI ranks on this node, which has 4 cores"),
        ({"p": 3, "q": 5}, "one per core; --param oversubscribe=true allows up to 4 per core"),
        ({"p": 1000, "q": 1000, "oversubscribe": True}, "at most 4 per core even with oversubscribe=true"),
    ],
)
def test_plan_errors(overrides: dict[str, float | int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_node(**CM5_8GB, sim=False, overrides=overrides)


@pytest.mark.parametrize(("cores", "memory_mb"), [(0, 8053), (4, 0)])
def test_plan_rejects_impossible_facts(cores: int, memory_mb: int) -> None:
    with pytest.raises(ValueError, match="node facts look wrong"):
        plan_node(cores=cores, memory_mb=memory_mb, cpu="Cortex-A76", sim=False, overrides={})


# ---------------------------------------------------------------------------------------------------------------------
# parse_params()


def test_parse_params_values() -> None:
    assert parse_params([]) == {}
    parsed = parse_params(["n=20000", "nb=192", " p = 2", "q=4", "mem_fraction=0.8"])
    assert parsed == {"n": 20000, "nb": 192, "p": 2, "q": 4, "mem_fraction": 0.8}
    assert all(isinstance(parsed[k], int) for k in ("n", "nb", "p", "q"))
    assert parse_params(["oversubscribe=true"]) == {"oversubscribe": True}
    assert parse_params(["oversubscribe=False"]) == {"oversubscribe": False}


@given(st.dictionaries(st.sampled_from(PARAM_KEYS[:4]), st.integers(1, 10**6)), st.floats(0.001, 0.95))
def test_parse_params_round_trip(ints: dict[str, int], fraction: float) -> None:
    items = [f"{k}={v}" for k, v in ints.items()] + [f"mem_fraction={fraction!r}"]
    assert parse_params(items) == {**ints, "mem_fraction": fraction}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nn=3", "--param nn: unknown HPL parameter (did you mean 'n'?); allowed: n, nb, p, q, mem_fraction"),
        ("nbb=3", "--param nbb: unknown HPL parameter (did you mean 'nb'?); allowed: "),
        ("mem=0.5", "--param mem: unknown HPL parameter (did you mean 'mem_fraction'?); allowed: "),
        ("memfraction=0.5", "--param memfraction: unknown HPL parameter (did you mean 'mem_fraction'?)"),
        ("threads=4", "--param threads: unknown HPL parameter; allowed: n, nb, p, q, mem_fraction"),
        ("n=0", "--param n=0: expected a positive whole number, e.g. n=20000"),
        ("nb=-8", "--param nb=-8: expected a positive whole number, e.g. nb=256"),
        ("p=two", "--param p=two: expected a positive whole number, e.g. p=2"),
        ("q=1.5", "--param q=1.5: expected a positive whole number, e.g. q=2"),
        ("n=", "--param n=: expected a positive whole number"),
        ("mem_fraction=0", "--param mem_fraction=0: expected a fraction of memory above 0 and at most 0.95"),
        ("mem_fraction=0.96", "--param mem_fraction=0.96: expected a fraction of memory above 0 and at most 0.95"),
        ("mem_fraction=nan", "--param mem_fraction=nan: expected a fraction"),
        ("mem_fraction=lots", "--param mem_fraction=lots: expected a fraction"),
        ("oversubscribe=1", "--param oversubscribe=1: expected true or false"),
        ("n", "--param 'n': expected key=value, e.g. n=20000"),
        ("=5", "--param '=5': expected key=value"),
    ],
)
def test_parse_params_errors(item: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_params([item])
    assert str(caught.value).startswith(message)


def test_parse_params_duplicate() -> None:
    with pytest.raises(ValueError, match=r"--param n given twice \(20000 and 30000\)"):
        parse_params(["n=20000", "n=30000"])
