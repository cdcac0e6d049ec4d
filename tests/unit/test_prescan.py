"""The msgpack pre-scanner (nodeagent/protocol/prescan.py) agrees with msgpack on every bounded document and refuses
everything else with a ProtocolError before msgpack sees it."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.errors import ProtocolError
from nodeagent.protocol import codec
from nodeagent.protocol.prescan import MAX_DEPTH, MAX_ITEMS, scan

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=60,
)


def depth(doc: Any) -> int:
    if isinstance(doc, list):
        return 1 + max((depth(d) for d in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((depth(d) for d in doc.values()), default=0)
    return 0


def nested(levels: int, leaf: Any = None) -> Any:
    doc = leaf
    for i in range(levels):
        doc = [doc] if i % 2 else {"k": doc}
    return doc


def decodes(payload: bytes) -> bool:
    try:
        msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:
        return False
    return True


@given(documents)
def test_every_bounded_document_passes_and_decodes_to_itself(doc: Any) -> None:
    payload = msgpack.packb(doc, use_bin_type=True)
    if depth(doc) > MAX_DEPTH:
        with pytest.raises(ProtocolError, match="nesting deeper"):
            scan(payload)
        return
    scan(payload)
    assert codec.unpackb(payload) == doc


@given(documents, st.data())
def test_a_cut_document_is_refused(doc: Any, data: st.DataObject) -> None:
    payload = msgpack.packb(doc, use_bin_type=True)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ProtocolError):
        scan(payload[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_garbage_gives_only_protocol_errors_and_what_passes_msgpack_decodes(payload: bytes) -> None:
    try:
        scan(payload)
    except ProtocolError:
        return
    assert decodes(payload)


@settings(max_examples=300)
@given(documents, st.data())
def test_changed_bytes_give_only_protocol_errors_and_what_passes_msgpack_decodes(doc: Any, data: st.DataObject) -> None:
    payload = bytearray(msgpack.packb(doc, use_bin_type=True))
    for _ in range(data.draw(st.integers(1, 4))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    try:
        scan(bytes(payload))
    except ProtocolError:
        return
    assert decodes(bytes(payload))


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_limit_passes(levels: int) -> None:
    scan(msgpack.packb(nested(levels)))


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (msgpack.packb(nested(MAX_DEPTH + 1)), "nesting deeper than 32"),
        (b"\x91" * 1024, "nesting deeper than 32"),  # 1 KiB, 1,024 levels: what leaked 80 KB a message
        (b"\xdd\xff\xff\xff\xff", f"array has 4294967295 items, more than {MAX_ITEMS}"),
        (b"\xdf\x00\x10\x00\x01", f"map has 1048577 items, more than {MAX_ITEMS}"),
        (msgpack.packb(list(range(MAX_ITEMS + 1))), "more than 4096"),
        (b"\xdb\xff\xff\xff\xff", "a string of 4294967295 bytes runs past its end"),
        (b"\xc6\x00\x00\x01\x00ab", "ends early"),
        (b"\xcb\x00\x00", "ends early"),
        (b"\xd9", "ends early"),
        (b"", "ends early"),
        (b"\x92\xc0", "ends early"),
        (b"\xc1", "reserved byte 0xC1"),
        (b"\xd6\xff\x00\x00\x00\x00", "extension type"),  # a msgpack timestamp
        (b"\xc7\x01\x05x", "extension type"),
        (b"\x81\x01\xc0", "map key at byte 1 is not a string"),
        (b"\x81\xc4\x01k\xc0", "map key at byte 1 is not a string"),
        (b"\x81\x90\xc0", "map key at byte 1 is not a string"),
        (b"\xa2\xc3\x28", "not UTF-8"),
        (b"\xa3\xed\xa0\x80", "not UTF-8"),  # a lone surrogate
        (b"\xc0\xc0", "1 bytes follow the message"),
    ],
)
def test_each_kind_of_bad_payload_is_refused_with_the_reason(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        scan(payload)


def test_every_header_byte_is_handled() -> None:
    """Each of the 256 first bytes, followed by enough zeros for any length field: one answer, never a crash."""
    for b in range(256):
        payload = bytes([b]) + bytes(16)
        try:
            scan(payload)
        except ProtocolError:
            continue
        assert decodes(payload), hex(b)


def test_the_codec_checks_size_before_anything() -> None:
    with pytest.raises(ProtocolError, match="over the 262144-byte limit"):
        codec.unpackb(b"\xc0" * (codec.MAX_PAYLOAD_BYTES + 1))
