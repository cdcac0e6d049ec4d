"""The smart fan unit's UART protocol: the reference example, escapes, checksums, and any chunking of a stream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import ProtocolError
from nodeagent.hw import fanunit_proto as proto
from nodeagent.hw.fanunit_proto import Decoder, Frame

BYTE = st.integers(0, 255)
FRAMES = st.builds(Frame, BYTE, st.binary(min_size=3, max_size=3))
# Garbage between frames may hold anything but a start byte (a start byte would open a frame, by design).
GARBAGE = st.binary(max_size=12).map(lambda b: b.replace(b"\x7e", b""))


def test_reference_example() -> None:
    assert proto.set_fan_percent(50) == bytes.fromhex("7E 01 32 00 00 33 7F")
    assert Decoder().feed(bytes.fromhex("7E 01 32 00 00 33 7F")) == [Frame(0x01, b"\x32\0\0")]


def test_escapes_special_bytes() -> None:
    # cmd 0x7E, data 7F 7D 00 -> chk = 7E^7F^7D = 0x7C; the three specials each become 7D xx.
    wire = proto.encode(0x7E, b"\x7f\x7d\x00")
    assert wire == bytes.fromhex("7E 7D5E 7D5F 7D5D 00 7C 7F")
    assert Decoder().feed(wire) == [Frame(0x7E, b"\x7f\x7d\x00")]


def test_checksum_escaped_when_special() -> None:
    wire = proto.encode(0x01, b"\x7f\x00\x00")  # chk = 0x7E
    assert wire == bytes.fromhex("7E 01 7D5F 00 00 7D5E 7F")


def test_checksum_error_is_counted_and_skipped() -> None:
    bad = bytearray(proto.set_fan_percent(50))
    bad[5] ^= 0x01
    dec = Decoder()
    assert dec.feed(bytes(bad) + proto.fan_rpm(1234.5)) == [Frame(proto.CMD_FAN_RPM, (12345).to_bytes(3, "big"))]
    assert (dec.checksum_errors, dec.malformed, dec.skipped, dec.frames) == (1, 0, 1, 1)


@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex("7E 01 32 00 33 7F"),  # one byte short
        bytes.fromhex("7E 01 32 00 00 00 33 7F"),  # one byte long
        bytes.fromhex("7E 01 32 00 00 7D 7F"),  # escape right before the end
        bytes.fromhex("7E 01 32"),  # cut short by the next frame's start
    ],
)
def test_malformed_frames_skipped(wire: bytes) -> None:
    dec = Decoder()
    frames = dec.feed(wire + proto.button_press())
    assert frames == [Frame(proto.CMD_BUTTON_PRESS)]
    assert dec.malformed == 1 and dec.checksum_errors == 0


def test_garbage_before_start_dropped() -> None:
    dec = Decoder()
    assert dec.feed(b"\x00\x7f\x7d\xffhello" + proto.button_press()) == [Frame(proto.CMD_BUTTON_PRESS)]
    assert dec.dropped_bytes == 9


def test_split_inside_escape() -> None:
    wire = proto.encode(0x7D, b"\x00\x00\x00")
    dec = Decoder()
    out = [f for b in wire for f in dec.feed(bytes((b,)))]
    assert out == [Frame(0x7D)]


def test_typed_messages() -> None:
    def one(wire: bytes) -> proto.Message:
        (frame,) = Decoder().feed(wire)
        return proto.parse_frame(frame)

    assert one(proto.fan_rpm(2400)) == proto.FanRpm(2400.0)
    assert one(proto.airflow_temp(31.7)) == proto.AirflowTemp(pytest.approx(31.7))
    assert one(proto.button_press()) == proto.ButtonPress()
    assert one(proto.set_fan_percent(120)) == proto.SetFanPercent(100)
    assert one(proto.set_led(255, 16, 1)) == proto.SetLed(red=255, green=16, blue=1)
    assert proto.set_led(1, 2, 3)[2:5] == bytes((3, 2, 1))  # sent blue, green, red


def test_value_caps_and_truncates() -> None:
    assert proto.encode_value(1e9) == b"\xff\xff\xff"
    assert proto.encode_value(-5) == b"\0\0\0"
    assert proto.encode_value(12.34) == (123).to_bytes(3, "big")
    assert proto.decode_value(b"\x00\x30\x39") == 1234.5


def test_unknown_command_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="0x42"):
        proto.parse_frame(Frame(0x42))


def test_led_range_checked() -> None:
    with pytest.raises(ValueError, match="green"):
        proto.set_led(0, 256, 0)


@given(BYTE, BYTE, BYTE, BYTE)
def test_round_trip_every_byte_value(cmd: int, d0: int, d1: int, d2: int) -> None:
    data = bytes((d0, d1, d2))
    wire = proto.encode(cmd, data)
    body = wire[1:-1]
    assert proto.SOF not in body and proto.EOF not in body  # framing bytes never appear inside
    dec = Decoder()
    assert dec.feed(wire) == [Frame(cmd, data)]
    assert dec.skipped == 0 and dec.dropped_bytes == 0


@given(st.lists(st.tuples(GARBAGE, FRAMES), max_size=8), GARBAGE, st.data())
def test_any_chunking_of_a_noisy_stream(parts: list[tuple[bytes, Frame]], tail: bytes, data: st.DataObject) -> None:
    stream = b"".join(g + proto.encode(f.cmd, f.data) for g, f in parts) + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    dec = Decoder()
    out = [f for chunk in chunks for f in dec.feed(chunk)]
    assert out == [f for _, f in parts]
    assert dec.skipped == 0


@given(st.binary(max_size=200), st.lists(FRAMES, min_size=1, max_size=3))
def test_decoder_recovers_after_any_bytes(noise: bytes, frames: list[Frame]) -> None:
    # Whatever came before (even half frames with start bytes), a clean frame after a fresh start decodes.
    dec = Decoder()
    dec.feed(noise)
    wire = b"".join(proto.encode(f.cmd, f.data) for f in frames)
    got = dec.feed(wire)
    assert got[-len(frames) :] == frames
