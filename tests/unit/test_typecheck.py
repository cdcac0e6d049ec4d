"""The checker of untrusted values against annotations (nodeagent/protocol/typecheck.py), through unions of scalars:
what a job's parameters (``Scalar``) and the config's optional keys are."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.protocol.messages import Scalar
from nodeagent.protocol.typecheck import FieldError, check

scalars = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text())


@given(scalars)
def test_a_scalar_keeps_its_value_and_its_type(value: object) -> None:
    got = check(value, Scalar, "params.n")
    assert got == value and type(got) is type(value)


@given(st.one_of(st.none(), st.lists(st.integers()), st.dictionaries(st.text(), st.integers()), st.binary()))
def test_anything_else_is_refused_with_what_was_expected(value: object) -> None:
    with pytest.raises(FieldError) as err:
        check(value, Scalar, "params.n")
    assert err.value.path == "params.n" and "expected" in err.value.message


@given(st.booleans())
def test_a_bool_is_not_a_number_and_a_number_is_not_a_bool(flag: bool) -> None:
    with pytest.raises(FieldError, match=r"expected a whole number or a string, got (true|false)"):
        check(flag, int | str)
    with pytest.raises(FieldError, match="got 1"):
        check(1, bool | None)
    assert check(flag, bool | str) is flag


@given(st.integers(-(10**6), 10**6))
def test_a_whole_number_fits_a_number_arm_as_a_float(n: int) -> None:
    got = check(n, float | str)
    assert got == n and type(got) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_no_union_lets_a_non_finite_number_through(value: float) -> None:
    with pytest.raises(FieldError, match=r"got -?(nan|inf)"):
        check(value, Scalar)


def test_a_literal_arm_still_judges_a_string() -> None:
    assert check("auto", Literal["auto", "off"] | None) == "auto"
    with pytest.raises(FieldError, match='one of "auto", "off"'):
        check("on", Literal["auto", "off"] | None)
