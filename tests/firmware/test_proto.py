"""The firmware's frame codec against the agent's: same bytes out, same frames in, for any input."""

from __future__ import annotations

from fanunit import proto
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.hw import fanunit_proto as agent

byte = st.integers(0, 255)
# Streams rich in the three special bytes, so escapes, restarts and early ends all happen.
stream_bytes = st.one_of(byte, st.sampled_from((agent.SOF, agent.EOF, agent.ESC)))
streams = st.lists(st.lists(stream_bytes, max_size=40).map(bytes), max_size=12)


@given(byte, byte, byte, byte)
def test_encodings_are_byte_identical(cmd: int, d0: int, d1: int, d2: int) -> None:
    assert proto.encode(cmd, d0, d1, d2) == agent.encode(cmd, (d0, d1, d2))


@given(st.floats(-1e3, 2e6, allow_nan=False))
def test_tenths_values_match_the_agents(value: float) -> None:
    assert proto.fan_rpm(value) == agent.fan_rpm(value)
    assert proto.airflow_temp(value) == agent.airflow_temp(value)


@given(st.lists(st.tuples(byte, byte, byte, byte), max_size=8), streams)
def test_both_decoders_agree_on_any_stream(frames: list[tuple[int, int, int, int]], noise: list[bytes]) -> None:
    # Real frames interleaved with noise, cut into chunks of any size: the firmware's parser must see exactly the
    # frames, and count exactly the faults, that the agent's decoder does.
    wire = b"".join(n + agent.encode(f[0], f[1:]) for n, f in zip(noise, frames, strict=False)) + b"".join(noise)
    chunks = [wire[i : i + 7] for i in range(0, len(wire), 7)] + noise
    ours, theirs = proto.Parser(), agent.Decoder()
    got = [f for c in chunks for f in ours.feed(c)]
    want = [(f.cmd, *f.data) for c in chunks for f in theirs.feed(c)]
    assert got == want
    assert (ours.frames, ours.malformed, ours.bad_checksum, ours.dropped) == (
        theirs.frames,
        theirs.malformed,
        theirs.checksum_errors,
        theirs.dropped_bytes,
    )
    assert len(ours._body) <= 6  # bounded whatever came in


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_and_stay_bounded(data: bytes) -> None:
    parser = proto.Parser()
    for frame in parser.feed(data):
        assert len(frame) == 4 and all(0 <= b <= 255 for b in frame)
    assert len(parser._body) <= 6


@given(st.integers(0, 255), st.integers(-5, 100_000))
def test_failsafe_frames_parse_in_the_agent(reason: int, silent_s: int) -> None:
    (frame,) = agent.Decoder().feed(proto.failsafe(reason, silent_s))
    assert agent.parse_frame(frame) == agent.Failsafe(reason, min(max(silent_s, 0), 0xFFFF))
    assert proto.failsafe(reason, silent_s) == agent.failsafe(reason, silent_s)


def test_the_agents_commands_decode_in_the_firmware() -> None:
    wire = agent.set_fan_percent(55.4) + agent.set_led(255, 0, 16) + agent.button_press()
    assert proto.Parser().feed(wire) == [(0x01, 55, 0, 0), (0x02, 16, 0, 255), (0xA1, 0, 0, 0)]


def test_the_reference_example() -> None:
    assert proto.encode(proto.SET_FAN_PERCENT, 50) == bytes.fromhex("7E 01 32 00 00 33 7F")
    assert proto.Parser().feed(bytes.fromhex("7E 01 32 00 00 33 7F")) == [(1, 50, 0, 0)]
