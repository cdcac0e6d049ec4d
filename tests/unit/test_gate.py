"""The command gate (nodeagent/security/gate.py): every refusal its own code and reason, each checked alone, with a
clock the test sets; what an operator key and a leader key may each ask; and a node that accepts unsigned commands."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ProtocolError
from nodeagent.protocol import Command, JobSpec, Topics, codec, encode, envelope
from nodeagent.security.gate import CODES, CommandGate, LaunchSigner, NonceCache, Refused
from nodeagent.security.keys import SigningKey
from nodeagent.security.seal import seal

T = Topics("lab")
ALICE = SigningKey.generate("alice")
MALLORY = SigningKey.generate("mallory")
LEADER = SigningKey.generate("node1")
NOW = 1_800_000_000.0
IDENTIFY = Command(id="id-1", cmd="identify", nodes=("node2",))
LAUNCH = Command(id="j1.launch-1", cmd="launch", job_id="j1", argv=("orted",), sender="node1")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def gate(signed_only: bool = True, **kw: object) -> tuple[CommandGate, Clock]:
    clock = Clock()
    g = CommandGate({ALICE.public.id: ALICE.public}, signed_only=signed_only, clock=clock, **kw)  # type: ignore[arg-type]
    clock.now += 5.0  # the agent has been up a few seconds
    return g, clock


def signed(cmd: Command, topic: str, key: SigningKey = ALICE, at: float = NOW + 10) -> bytes:
    return seal(key, topic, encode(cmd), now=at)


def refusal(g: CommandGate, topic: str, payload: bytes, **kw: str) -> Refused:
    with pytest.raises(Refused) as caught:
        g.admit(topic, payload, **kw)
    assert caught.value.code in CODES
    return caught.value


def test_a_command_signed_by_an_operator_key_for_its_topic_passes() -> None:
    g, clock = gate()
    clock.now = NOW + 12
    admitted = g.admit(T.node_cmd("node2"), signed(IDENTIFY, T.node_cmd("node2")))
    assert (admitted.cmd, admitted.signer, admitted.role, admitted.ignored) == (IDENTIFY, "alice", "operator", "")


def test_unsigned_is_refused_with_the_fix_and_the_address_to_answer() -> None:
    g, _ = gate()
    r = refusal(g, T.cluster_cmd(), encode(IDENTIFY))
    assert r.code == "unsigned" and r.reply == "id-1" and r.nodes == ("node2",)
    assert "security.require_signed" in r.reason and "piclusterctl keygen" in r.reason and "--key FILE" in r.reason


def test_an_unknown_key_is_refused_naming_it_and_the_keys_trusted() -> None:
    g, _ = gate()
    r = refusal(g, T.node_cmd("node2"), signed(IDENTIFY, T.node_cmd("node2"), MALLORY))
    assert r.code == "unknown_key" and MALLORY.public.id in r.reason and "(its operator keys: alice)" in r.reason


def test_a_forged_signature_is_refused() -> None:
    g, _ = gate()
    topic = T.node_cmd("node2")
    env = envelope.unpack(signed(IDENTIFY, topic))
    forged = dataclasses.replace(env, sig=MALLORY.sign(env.signed_bytes()))  # mallory signs in alice's name
    assert refusal(g, topic, envelope.pack(forged)).code == "bad_signature"
    run = encode(Command(id="j9", cmd="run", nodes=("node2",), job=JobSpec(id="j9", kind="hpl")))
    swapped = dataclasses.replace(env, body=run)  # alice's signature over another body
    r = refusal(g, topic, envelope.pack(swapped))
    assert r.code == "bad_signature" and r.reply == "j9" and "alice" in r.reason


@pytest.mark.parametrize(
    ("signed_for", "received_on"),
    [
        (T.node_cmd("node1"), T.node_cmd("node2")),  # node1's command replayed to node2
        (T.node_cmd("node2"), T.cluster_cmd()),  # one node's command replayed to every node
        (T.cluster_cmd(), T.node_cmd("node2")),
        (T.node_cmd("node2"), Topics("other").node_cmd("node2")),  # another cluster's
        (T.node_cmd("node2"), T.launch("node2", "node1")),
    ],
)
def test_a_command_signed_for_another_topic_is_refused(signed_for: str, received_on: str) -> None:
    g, _ = gate()
    r = refusal(g, received_on, signed(IDENTIFY, signed_for))
    assert r.code == "wrong_topic" and signed_for in r.reason and received_on in r.reason


@pytest.mark.parametrize(("at", "words"), [(NOW + 5 - 61, "s ago"), (NOW + 5 + 61, "s in the future")])
def test_a_command_signed_beyond_the_skew_is_stale(at: float, words: str) -> None:
    g, _ = gate()
    r = refusal(g, T.node_cmd("node2"), signed(IDENTIFY, T.node_cmd("node2"), at=at))
    assert r.code == "stale" and words in r.reason and "security.max_skew_s (60 s)" in r.reason


def test_a_command_signed_before_the_agent_started_is_stale_even_within_the_skew() -> None:
    g, _ = gate()  # started at NOW, now NOW + 5
    r = refusal(g, T.node_cmd("node2"), signed(IDENTIFY, T.node_cmd("node2"), at=NOW - 1))
    assert r.code == "stale" and "before this agent started" in r.reason


def test_a_replay_is_refused_and_a_fresh_signature_of_the_same_command_is_not() -> None:
    g, _ = gate()
    topic = T.node_cmd("node2")
    payload = signed(IDENTIFY, topic)
    g.admit(topic, payload)
    assert refusal(g, topic, payload).code == "replayed"
    g.admit(topic, signed(IDENTIFY, topic))  # new nonce


def test_a_key_that_signs_too_much_at_once_waits() -> None:
    g, clock = gate(nonce_max=2)
    topic = T.node_cmd("node2")
    g.admit(topic, signed(IDENTIFY, topic))
    g.admit(topic, signed(IDENTIFY, topic))
    r = refusal(g, topic, signed(IDENTIFY, topic))
    assert r.code == "busy" and "security.nonce_cache_max" in r.reason
    clock.now += 200  # the first two have expired
    g.admit(topic, signed(IDENTIFY, topic, at=clock.now))


def test_an_operator_key_does_not_sign_a_launch() -> None:
    g, _ = gate()
    topic = T.launch("node2", "node1")
    r = refusal(g, topic, signed(LAUNCH, topic), launch_sender="node1")
    assert r.code == "not_allowed" and "leader" in r.reason


def test_the_leader_key_the_job_names_signs_that_jobs_launch_and_nothing_else() -> None:
    held = LaunchSigner("j1", "node1", LEADER.public)
    g, _ = gate(launch_signer=lambda: held)
    topic = T.launch("node2", "node1")
    assert g.admit(topic, signed(LAUNCH, topic, LEADER), launch_sender="node1").role == "leader"
    other_job = dataclasses.replace(LAUNCH, id="j2.launch-1", job_id="j2")
    r = refusal(g, topic, signed(other_job, topic, LEADER), launch_sender="node1")
    assert r.code == "not_allowed" and "only the launch of job j1" in r.reason
    cmd_topic = T.node_cmd("node2")
    assert refusal(g, cmd_topic, signed(IDENTIFY, cmd_topic, LEADER)).code == "not_allowed"
    other_topic = T.launch("node2", "node3")  # the right key, on another leader's launch topic
    assert refusal(g, other_topic, signed(LAUNCH, other_topic, LEADER), launch_sender="node3").code == "not_allowed"
    g2, _ = gate()  # no member job held: the leader's key is unknown
    assert refusal(g2, topic, signed(LAUNCH, topic, LEADER), launch_sender="node1").code == "unknown_key"


def test_the_authentic_body_of_a_signed_command_is_validated_like_any_command() -> None:
    g, _ = gate()
    topic = T.node_cmd("node2")
    bad = codec.packb({"v": 1, "type": "command", "id": "f1", "cmd": "fan", "value": "lots"})
    with pytest.raises(ProtocolError, match='expected "auto" or a percent'):
        g.admit(topic, seal(ALICE, topic, bad, now=NOW + 10))


def test_a_node_that_accepts_unsigned_commands_obeys_a_bad_signature_and_says_so() -> None:
    g, _ = gate(signed_only=False)
    topic = T.node_cmd("node2")
    assert g.admit(topic, encode(IDENTIFY)).role == "unsigned"
    admitted = g.admit(topic, signed(IDENTIFY, topic, MALLORY))
    assert admitted.role == "unsigned" and admitted.cmd == IDENTIFY and admitted.ignored.startswith("unknown_key")
    assert g.admit(topic, signed(IDENTIFY, topic)).role == "operator"  # a good one is still recognised


def test_a_reload_changes_the_keys_and_keeps_the_nonces() -> None:
    g, _ = gate()
    topic = T.node_cmd("node2")
    payload = signed(IDENTIFY, topic)
    g.admit(topic, payload)
    g.configure({}, signed_only=True, max_skew_s=60.0, nonce_max=10)
    assert refusal(g, topic, signed(IDENTIFY, topic)).code == "unknown_key"
    g.configure({ALICE.public.id: ALICE.public}, signed_only=True, max_skew_s=60.0, nonce_max=10)
    assert refusal(g, topic, payload).code == "replayed"


@given(st.floats(1.0, 3600.0), st.floats(-7200.0, 7200.0))
def test_stale_exactly_when_the_age_is_beyond_the_skew(skew: float, age: float) -> None:
    clock = Clock()
    g = CommandGate({ALICE.public.id: ALICE.public}, signed_only=True, max_skew_s=skew, clock=clock)
    g.started = 0.0  # long up
    topic = T.node_cmd("node2")
    payload = signed(IDENTIFY, topic, at=NOW - age)
    age_ms = NOW - int((NOW - age) * 1000) / 1000  # what the envelope carries: whole milliseconds
    try:
        g.admit(topic, payload)
        assert abs(age_ms) <= skew
    except Refused as r:
        assert r.code == "stale" and abs(age_ms) > skew


def test_the_nonce_cache_forgets_what_has_expired() -> None:
    cache = NonceCache(max_per_key=3)
    for i in range(3):
        assert cache.add("k", bytes([i]) * 16, expires=100.0 + i, now=50.0) == "new"
    assert cache.add("k", b"\0" * 16, expires=200.0, now=60.0) == "seen"
    assert cache.add("k", b"\7" * 16, expires=200.0, now=60.0) == "full"
    assert cache.add("other", b"\7" * 16, expires=200.0, now=60.0) == "new"  # each key its own share
    assert cache.add("k", b"\7" * 16, expires=300.0, now=101.5) == "new" and len(cache) == 3
