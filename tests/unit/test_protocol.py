"""The wire contract: round trips, tolerance of unknown fields, and clean rejection of everything else."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ProtocolError
from nodeagent.protocol import (
    PROTOCOL_VERSION,
    Command,
    Event,
    JobSpec,
    NodeFacts,
    PcieStatus,
    Telemetry,
    Topics,
    decode,
    encode,
    reply_address,
    to_wire,
)

names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
job_ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
scalars = st.one_of(st.integers(-(2**53), 2**53), finite, st.text(max_size=20), st.booleans())
opt = st.none

telemetry = st.builds(
    Telemetry,
    node=names,
    seq=st.integers(0, 2**63 - 1),
    t=finite,
    temp_c=st.one_of(opt(), finite),
    freq_mhz=st.one_of(opt(), finite),
    governor=st.one_of(opt(), st.text(max_size=12)),
    throttled=st.one_of(opt(), st.integers(0, 2**32 - 1)),
    throttle=st.lists(st.text(max_size=10), max_size=4).map(tuple),
    load1=st.one_of(opt(), finite),
    mem_total_mb=st.one_of(opt(), st.integers(0, 2**40)),
    job=st.one_of(opt(), job_ids),
    errors=st.lists(st.text(max_size=30), max_size=3).map(tuple),
)
jobs = st.builds(
    JobSpec,
    id=job_ids,
    kind=names,
    params=st.dictionaries(st.text(max_size=8), scalars, max_size=4),
    node_params=st.dictionaries(names, st.dictionaries(st.text(max_size=8), scalars, max_size=3), max_size=3),
    timeout_s=st.floats(0.001, 1e9),
    force=st.booleans(),
)
commands = st.one_of(
    jobs.flatmap(
        lambda j: st.builds(
            Command,
            id=st.just(j.id),
            cmd=st.just("run"),
            job=st.just(j),
            nodes=st.lists(names, max_size=5).map(tuple),
            t=finite,
        )
    ),
    st.builds(
        Command,
        id=job_ids,
        cmd=st.sampled_from(["cancel", "resend"]),
        job_id=job_ids,
        nodes=st.lists(names, max_size=5).map(tuple),
    ),
)
events = st.builds(
    Event,
    node=names,
    seq=st.integers(0, 2**63 - 1),
    t=finite,
    kind=st.sampled_from(["accepted", "rejected", "started", "progress", "finished", "failed", "cancelled"]),
    job=st.one_of(st.just(""), job_ids),
    reason=st.text(max_size=40),
    progress=st.one_of(opt(), st.floats(0, 1)),
    result=st.one_of(opt(), st.dictionaries(st.text(max_size=8), scalars, max_size=4)),
)


@given(st.one_of(telemetry, commands, events))
def test_every_message_round_trips(msg: Telemetry | Command | Event) -> None:
    assert decode(encode(msg), type(msg)) == msg


@given(
    telemetry,
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(
            lambda k: k not in Telemetry.__dataclass_fields__ and k not in ("v", "type")
        ),
        scalars,
        max_size=5,
    ),
)
def test_unknown_fields_are_ignored(msg: Telemetry, extra: dict) -> None:
    wire = {**to_wire(msg), **extra}
    assert decode(msgpack.packb(wire), Telemetry) == msg


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_protocol_error(payload: bytes) -> None:
    for cls in (Command, Event, Telemetry, NodeFacts):
        with contextlib.suppress(ProtocolError):
            decode(payload, cls)
    assert isinstance(reply_address(payload), str)


@given(st.dictionaries(st.text(max_size=10), st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=8))
def test_random_maps_never_raise_anything_but_protocol_error(data: dict) -> None:
    payload = msgpack.packb({"v": PROTOCOL_VERSION, "type": "command", **data})
    with pytest.raises(ProtocolError):
        decode(payload, Command)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"id": "j", "cmd": "run"}, "job", "missing"),
        ({"id": "j", "cmd": "run", "job": {"id": "k", "kind": "hpl"}}, "job.id", "must equal"),
        ({"id": "j", "cmd": "run", "job": {"id": "j", "kind": "hpl", "timeout_s": 0}}, "job.timeout_s", "above 0"),
        (
            {"id": "j", "cmd": "run", "job": {"id": "j", "kind": "hpl", "params": {"n": [1]}}},
            "job.params.n",
            "expected",
        ),
        ({"id": "j", "cmd": "cancel"}, "job_id", "missing"),
        ({"id": "j", "cmd": "resend"}, "job_id", "missing"),
        ({"id": "j", "cmd": "resend", "job_id": "../etc"}, "job_id", "letters"),
        ({"id": "j/../x", "cmd": "cancel", "job_id": "a"}, "id", "letters"),
        ({"id": "j", "cmd": "reboot"}, "cmd", 'one of "run", "cancel"'),
        ({"id": "j", "cmd": "cancel", "job_id": "a", "nodes": ["ok", "b/ad"]}, "nodes", "invalid node names"),
    ],
)
def test_invalid_commands_name_the_field(fields: dict, field: str, words: str) -> None:
    payload = msgpack.packb({"v": PROTOCOL_VERSION, "type": "command", **fields})
    with pytest.raises(ProtocolError) as err:
        decode(payload, Command)
    assert err.value.field == field and words in err.value.reason


def test_version_and_type_are_checked() -> None:
    wire = to_wire(Command(id="j", cmd="cancel", job_id="j"))
    with pytest.raises(ProtocolError, match="protocol version 2 is not 1") as err:
        decode(msgpack.packb({**wire, "v": 2}), Command)
    assert err.value.field == "v"
    with pytest.raises(ProtocolError, match=r"expected a message of type .event.") as err:
        decode(msgpack.packb(wire), Event)


def test_reply_address_finds_the_job_of_a_broken_command() -> None:
    assert reply_address(msgpack.packb({"id": "job-1", "cmd": 7})) == "job-1"
    assert reply_address(msgpack.packb({"job": {"id": "job-2"}})) == "job-2"
    assert reply_address(msgpack.packb({"id": "../etc"})) == ""
    assert reply_address(b"\xc1") == ""


def test_params_for_merges_node_overrides() -> None:
    job = JobSpec(id="j", kind="hpl", params={"n": 1, "nb": 2}, node_params={"a": {"n": 5}})
    assert job.params_for("a") == {"n": 5, "nb": 2}
    assert job.params_for("b") == {"n": 1, "nb": 2}


def test_topics_build_and_parse() -> None:
    t = Topics("lab")
    assert t.telemetry("n1") == "picluster/v1/lab/node/n1/telemetry"
    assert t.cluster_cmd() == "picluster/v1/lab/cmd"
    assert t.parse("picluster/v1/lab/node/n1/events") == ("n1", "events")
    assert t.parse("picluster/v1/lab/cmd") == ("", "cmd")
    assert t.parse("picluster/v1/other/node/n1/events") is None
    assert t.parse("picluster/v1/lab/node/n1/x/events") is None
    for bad in ("", "a/b", "a+b", "#", "x" * 65):
        with pytest.raises(ProtocolError):
            t.status(bad)
    with pytest.raises(ProtocolError):
        Topics("bad/cluster")


@given(names, st.sampled_from(["status", "facts", "telemetry", "events", "cmd", "state"]))
def test_topic_parse_inverts_build(node: str, leaf: str) -> None:
    t = Topics("c")
    assert t.parse(t.node(node, leaf)) == (node, leaf)


@pytest.mark.parametrize(
    ("aer_types", "words"),
    [
        ({"severe": {"BadTLP": 1}}, "pcie: device 0 ('0001:01:00.0') aer_types.severe: expected one of correctable"),
        ({"correctable": {f"E{i}": 1 for i in range(65)}}, "expected at most 64 error types, got 65"),
        ({"correctable": {"X" * 65: 1}}, "expected a name of 1-64 printable characters"),
        ({"correctable": {"Bad\nTLP": 1}}, "expected a name of 1-64 printable characters"),
        ({"correctable": {"BadTLP": -1}}, "aer_types.correctable.BadTLP: expected a count from 0 to 2^64-1"),
        ({"correctable": {"BadTLP": "many"}}, "expected a whole number"),
        ({"correctable": ["BadTLP"]}, "pcie[0].aer_types.correctable: expected"),
    ],
)
def test_per_type_aer_counts_outside_the_bounds_are_refused_by_field(aer_types: object, words: str) -> None:
    wire = to_wire(Telemetry(node="n1", seq=1, t=0.0, pcie=(PcieStatus(device="0001:01:00.0"),)))
    wire["pcie"][0]["aer_types"] = aer_types
    with pytest.raises(ProtocolError) as exc:
        decode(msgpack.packb(wire), Telemetry)
    assert words in str(exc.value) and str(exc.value).startswith("pcie")
