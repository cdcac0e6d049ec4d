"""The signed envelope (nodeagent/protocol/envelope.py) and its signature (nodeagent/security): it round-trips, it
is bounded, a signature covers every field that means something, and no byte string makes the decoder raise
anything but ProtocolError."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent.errors import ProtocolError
from nodeagent.protocol import Command, codec, encode, envelope
from nodeagent.protocol.envelope import Envelope
from nodeagent.security.keys import KeyFileError, PublicKey, SigningKey, key_id
from nodeagent.security.seal import seal

KEY = SigningKey.generate("alice")
OTHER = SigningKey.generate("mallory")
TOPIC = "picluster/v1/lab/node/node1/cmd"
BODY = encode(Command(id="j1", cmd="identify", nodes=("node1",)))

topics = st.text(min_size=1, max_size=120).filter(lambda t: len(t.encode()) <= envelope.MAX_TOPIC)
envelopes = st.builds(
    Envelope,
    key=st.binary(min_size=8, max_size=8).map(bytes.hex),
    topic=topics,
    ts_ms=st.integers(0, envelope.MAX_TS_MS),
    nonce=st.binary(min_size=16, max_size=16),
    body=st.binary(min_size=1, max_size=512),
    sig=st.binary(min_size=64, max_size=64),
)


@given(envelopes)
def test_an_envelope_round_trips_through_the_wire(env: Envelope) -> None:
    assert envelope.unpack(envelope.pack(env)) == env


@given(envelopes, st.sampled_from(["key", "topic", "ts_ms", "nonce", "body"]), st.data())
def test_the_signed_bytes_change_with_every_field_but_the_signature(
    env: Envelope, name: str, data: st.DataObject
) -> None:
    other = data.draw(envelopes)
    changed = dataclasses.replace(env, **{name: getattr(other, name)})
    assert (changed.signed_bytes() == env.signed_bytes()) == (getattr(other, name) == getattr(env, name))
    assert dataclasses.replace(env, sig=other.sig).signed_bytes() == env.signed_bytes()


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["topic", "ts_ms", "nonce", "body"]), st.data())
def test_a_signature_verifies_only_what_was_signed(name: str, data: st.DataObject) -> None:
    env = envelope.unpack(seal(KEY, TOPIC, BODY, now=1_800_000_000.0))
    assert KEY.public.verify(env.sig, env.signed_bytes())
    assert not OTHER.public.verify(env.sig, env.signed_bytes())
    other = data.draw(envelopes)
    changed = dataclasses.replace(env, **{name: getattr(other, name)})
    assert KEY.public.verify(changed.sig, changed.signed_bytes()) == (changed == env)


def test_seal_names_the_key_stamps_the_time_and_never_repeats_a_nonce() -> None:
    first, second = (envelope.unpack(seal(KEY, TOPIC, BODY, now=1_800_000_000.25)) for _ in range(2))
    assert first.key == KEY.public.id == key_id(KEY.public.raw) and first.ts_ms == 1_800_000_000_250
    assert first.topic == TOPIC and first.body == BODY and first.nonce != second.nonce


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("alg", "rsa", "expected alg 'ed25519'"),
        ("v", 2, "protocol version 2"),
        ("key", "ABCDEF0123456789", "16 lowercase hex digits"),
        ("key", 7, "expected str"),
        ("topic", "", "a topic of 1 to 512 bytes"),
        ("topic", "t" * 513, "a topic of 1 to 512 bytes"),
        ("ts", -1, r"from 0 to 2\^63-1"),
        ("ts", True, "expected int"),
        ("ts", 1.5, "expected int"),
        ("nonce", b"x" * 15, "expected 16 bytes"),
        ("nonce", "x" * 16, "expected bytes"),
        ("body", b"", "the signed command's bytes"),
        ("sig", b"", "expected 64 bytes"),
        ("sig", b"s" * 65, "expected 64 bytes"),
    ],
)
def test_a_malformed_envelope_names_the_field(field: str, value: object, why: str) -> None:
    wire = envelope.unpack(seal(KEY, TOPIC, BODY)).to_wire()
    wire[field] = value
    with pytest.raises(ProtocolError, match=why) as caught:
        envelope.unpack(codec.packb(wire))
    assert caught.value.field == field


def test_a_field_a_newer_sender_adds_is_ignored() -> None:
    wire = envelope.unpack(seal(KEY, TOPIC, BODY)).to_wire() | {"hint": "unsigned, so meaningless"}
    assert envelope.unpack(codec.packb(wire)).body == BODY


@given(st.binary(max_size=300))
def test_no_bytes_make_the_decoder_raise_anything_but_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        envelope.unpack(data)


@given(st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_no_truncation_or_flipped_byte_of_a_real_envelope_breaks_the_decoder(noise: bytes, at: int) -> None:
    real = seal(KEY, TOPIC, BODY)
    for payload in (real[: at % len(real)], real[:at] + noise + real[at + len(noise) :]):
        try:
            env = envelope.unpack(payload)
        except ProtocolError:
            continue
        assert isinstance(env, Envelope)


def test_the_digest_binds_the_topic_and_the_exact_payload() -> None:
    payload = seal(KEY, TOPIC, BODY)
    assert envelope.payload_digest(TOPIC, payload) == envelope.payload_digest(TOPIC, bytes(payload))
    assert envelope.payload_digest(TOPIC + "x", payload) != envelope.payload_digest(TOPIC, payload)
    assert envelope.payload_digest(TOPIC, payload + b"\0") != envelope.payload_digest(TOPIC, payload)


# --- public key lines --------------------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32), st.text(alphabet="abc@.-", max_size=20))
def test_a_public_key_line_round_trips(raw: bytes, comment: str) -> None:
    key = PublicKey(raw)
    assert PublicKey.parse(key.line(comment)).raw == raw
    assert PublicKey.parse(key.b64).raw == raw


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("ssh-ed25519 AAAA comment", "expected 'picluster-ed25519"),
        ("picluster-ed25519", "expected 'picluster-ed25519"),
        ("picluster-ed25519 not*base64", "is not base64"),
        ("picluster-ed25519 " + PublicKey(bytes(32)).b64[:-1] + "AA=", "not base64"),
        ("picluster-ed25519 AAAA", "3 bytes long, not 32"),
        ("", "expected 'picluster-ed25519"),
    ],
)
def test_a_bad_public_key_line_says_why(text: str, why: str) -> None:
    with pytest.raises(KeyFileError, match=why):
        PublicKey.parse(text)


def test_a_private_key_file_is_0600_never_overwritten_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    path = tmp_path / "op.key"
    KEY.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load(path).public.raw == KEY.public.raw
    with pytest.raises(FileExistsError):
        KEY.save(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"may be read by others \(mode 0640\): chmod 600"):
        SigningKey.load(path)
    (tmp_path / "link.key").symlink_to(path)
    with pytest.raises(KeyFileError, match="cannot read the key"):
        SigningKey.load(tmp_path / "link.key")
    (tmp_path / "junk.key").write_text("not a key")
    (tmp_path / "junk.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        SigningKey.load(tmp_path / "junk.key")
