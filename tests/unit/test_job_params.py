"""Typed job parameters and [[jobs.template]]: declarations, checks, config errors naming file/key/fix."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent import config
from nodeagent.errors import ConfigError, JobRejected
from nodeagent.jobs.params import ParamSpec, coerce, render, resolve
from nodeagent.jobs.template_config import fill, placeholders


def load(templates: list[dict[str, Any]]) -> config.AgentConfig:
    return config.from_mapping({"jobs": {"template": templates}}, "/etc/picluster/agent.toml")


def tpl(**params: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "argv": ["prog", *(f"--{k}={{{k}}}" for k in params)], "params": params}


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (
            [tpl(n={"type": "integer"})],
            'jobs.template[0].params.n.type: expected one of "int", "float", "str", "bool", "choice", got \'integer\'',
        ),
        (
            [tpl(n={"type": "int", "default": "four"})],
            "jobs.template[0].params.n.default: expected a whole number, got 'four' (the default must itself be a "
            "valid value)",
        ),
        (
            [tpl(n={"type": "int", "min": 1, "max": 64, "default": 100})],
            "jobs.template[0].params.n.default: expected at most 64, got 100 (the default must itself be a valid "
            "value)",
        ),
        ([tpl(n={"type": "int", "min": 5, "max": 1})], "jobs.template[0].params.n.max: expected a number at least min"),
        ([tpl(c={"type": "choice"})], "jobs.template[0].params.c.choices: a choice parameter needs choices"),
        ([tpl(s={"type": "str", "pattern": "("})], "jobs.template[0].params.s.pattern: not a valid regular expression"),
        (
            [{"name": "t", "argv": ["prog", "{missing}"]}],
            "jobs.template[0].argv[1]: {missing} is not a declared parameter; add [jobs.template.params.missing]",
        ),
        ([{"name": "t", "argv": ["prog", "{oops"]}], "jobs.template[0].argv[1]: lone '{'"),
        ([{"name": "t", "argv": ["{p}"], "params": {"p": {}}}], "jobs.template[0].argv: expected a list whose first"),
        ([{"name": "stress", "argv": ["x"]}], "jobs.template[0].name: 'stress' is a built-in job kind"),
        ([{"name": "a", "argv": ["x"]}, {"name": "a", "argv": ["y"]}], "jobs.template[1].name: a second template"),
        (
            [{"name": "t", "argv": ["x"], "timeout": 5}],
            'jobs.template[0].timeout: unknown key (did you mean "timeout_s"?)',
        ),
        ([{"name": "t", "argv": ["x"], "timeout_s": 0}], "jobs.template[0].timeout_s: expected a number above 0"),
    ],
)
def test_template_config_errors_name_the_file_the_key_and_the_fix(templates: list[Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(templates)
    assert str(err.value).startswith("/etc/picluster/agent.toml: ")
    assert message in str(err.value)


def test_a_valid_template_loads() -> None:
    cfg = load([tpl(n={"type": "int", "min": 1, "max": 8, "default": 2}, mode={"type": "choice", "choices": ["a"]})])
    (t,) = cfg.jobs.template
    assert t.params["n"] == ParamSpec("int", 2, 1, 8) and t.heavy and t.timeout_s == 3600.0


def test_resolve_refuses_unknown_missing_and_out_of_range_parameters() -> None:
    specs = {"n": ParamSpec("int", None, min=1, max=4), "mode": ParamSpec("choice", "a", choices=("a", "b"))}
    assert resolve(specs, {"n": "3"}, "t") == {"n": 3, "mode": "a"}
    with pytest.raises(JobRejected, match="t: parameter 'n' is required \\(a whole number from 1 to 4\\)"):
        resolve(specs, {}, "t")
    with pytest.raises(JobRejected, match="parameter 'n': expected at most 4, got 9") as err:
        resolve(specs, {"n": 9}, "t")
    assert err.value.field == "params.n"
    with pytest.raises(JobRejected, match="unknown parameter 'nn' \\(parameters: n, mode\\)"):
        resolve(specs, {"n": 1, "nn": 2}, "t")
    with pytest.raises(JobRejected, match="expected one of a, b, got 'c'"):
        resolve(specs, {"n": 1, "mode": "c"}, "t")
    with pytest.raises(JobRejected, match="expected a whole number, got True"):
        resolve(specs, {"n": True}, "t")


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_ints_round_trip_through_their_string_form(n: int) -> None:
    spec = ParamSpec("int")
    assert coerce(spec, n, "n") == coerce(spec, render(n), "n") == n


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_through_their_string_form(x: float) -> None:
    assert coerce(ParamSpec("float"), render(x), "x") == x


@given(st.booleans())
def test_bools_round_trip(b: bool) -> None:
    assert coerce(ParamSpec("bool"), render(b), "b") is b


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_bounds_hold_for_every_accepted_value(lo: float, x: float) -> None:
    spec = ParamSpec("float", min=lo, max=lo + 10)
    try:
        value = coerce(spec, x, "x")
    except ValueError:
        assert not lo <= x <= lo + 10
    else:
        assert lo <= value <= lo + 10


# Any text without NUL: what a template receives is exactly what was sent, as one argv element.
TEXT = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=200)


@given(TEXT, TEXT, TEXT)
def test_fill_puts_a_value_into_its_element_literally(prefix: str, value: str, suffix: str) -> None:
    escaped = [p.replace("{", "{{").replace("}", "}}") for p in (prefix, suffix)]
    word = f"{escaped[0]}{{v}}{escaped[1]}"
    assert placeholders(word) == ["v"]
    assert fill(word, {"v": coerce(ParamSpec("str"), value, "v")}) == prefix + value + suffix


def test_shell_metacharacters_are_plain_text_to_a_str_parameter() -> None:
    nasty = "a; rm -rf / $(id) `id` && echo | cat > /tmp/x \"'"
    assert fill("--msg={v}", {"v": coerce(ParamSpec("str"), nasty, "v")}) == "--msg=" + nasty


def test_pattern_must_match_the_whole_value() -> None:
    spec = ParamSpec("str", pattern=r"[a-z]+")
    assert coerce(spec, "abc", "s") == "abc"
    with pytest.raises(ValueError, match=re.escape("expected a value matching '[a-z]+', got 'abc;'")):
        coerce(spec, "abc;", "s")
