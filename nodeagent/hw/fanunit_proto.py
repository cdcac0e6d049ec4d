"""The Compute Blade smart fan unit's UART protocol, sans I/O: bytes in, frames out, and the reverse.

A frame on the wire is ``0x7E cmd d0 d1 d2 chk 0x7F`` with ``chk = cmd ^ d0 ^ d1 ^ d2``. Any of cmd, d0–d2 or chk
that equals 0x7E (start), 0x7F (end) or 0x7D (escape) is sent as ``0x7D, byte ^ 0x20``. Set 50 % reads
``7E 01 32 00 00 33 7F``.

======  =======================  ==============  ===============================================================
cmd     name                     direction       data
======  =======================  ==============  ===============================================================
0x01    SetFanSpeedPercent       blade -> unit   ``[percent, 0, 0]``
0x02    SetLED                   blade -> unit   ``[blue, green, red]``
0xA1    ButtonPress              unit -> blade   ``[0, 0, 0]``
0xA2    AirFlowTemperature       unit -> blade   24-bit big-endian ``°C × 10``
0xA3    FanSpeedRPM              unit -> blade   24-bit big-endian ``RPM × 10``
0xA4    Failsafe                 unit -> blade   ``[reason, silent_s >> 8, silent_s & 0xFF]`` (picluster firmware)
======  =======================  ==============  ===============================================================

Source: compute-blade-community/compute-blade-agent, ``pkg/smartfanunit/proto``, for 0x01–0xA3. 0xA4 is
picluster's own (``firmware/``): the unit ran the fan at 100 % because this blade was silent for its heartbeat
timeout, sent once, in answer to the blade's first frame after it. ``reason`` 1: the blade had spoken, then fell
silent; 2: it had not spoken since the unit started. ``silent_s``: how long it was silent (capped at 65535). The
stock firmware never sends it, and an agent that predates it logs it as an unknown command and carries on.
Nothing here reads a clock or a file; ``fans/smartunit.py`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodeagent.errors import ProtocolError

SOF = 0x7E
EOF = 0x7F
ESC = 0x7D
ESC_XOR = 0x20
SPECIAL = frozenset((SOF, EOF, ESC))

CMD_SET_FAN_PERCENT = 0x01
CMD_SET_LED = 0x02
CMD_BUTTON_PRESS = 0xA1
CMD_AIRFLOW_TEMP = 0xA2
CMD_FAN_RPM = 0xA3
CMD_FAILSAFE = 0xA4

FAILSAFE_HEARTBEAT_LOST = 1  # Failsafe.reason: the blade had spoken, then was silent for the unit's timeout
FAILSAFE_NEVER_HEARD = 2  # Failsafe.reason: the blade had not spoken since the unit started

VALUE_MAX = 0xFFFFFF  # 24 bits
BODY_LEN = 5  # cmd, d0, d1, d2, chk


@dataclass(frozen=True)
class Frame:
    """One decoded frame: a command byte and its three data bytes (checksum already verified)."""

    cmd: int
    data: bytes = b"\0\0\0"

    def __post_init__(self) -> None:
        if not 0 <= self.cmd <= 0xFF:
            raise ValueError(f"cmd: expected a byte, got {self.cmd!r}")
        if len(self.data) != 3:
            raise ValueError(f"data: expected 3 bytes, got {len(self.data)}")


def checksum(cmd: int, data: bytes) -> int:
    """``cmd ^ d0 ^ d1 ^ d2``."""
    return cmd ^ data[0] ^ data[1] ^ data[2]


def encode(cmd: int, data: bytes | Sequence[int] = b"\0\0\0") -> bytes:
    """The wire bytes of one frame, escaped. ``data`` is three bytes."""
    frame = Frame(cmd, bytes(data))
    out = bytearray((SOF,))
    for b in (frame.cmd, *frame.data, checksum(frame.cmd, frame.data)):
        if b in SPECIAL:
            out += bytes((ESC, b ^ ESC_XOR))
        else:
            out.append(b)
    out.append(EOF)
    return bytes(out)


class Decoder:
    """Turns a byte stream, in chunks of any size, into frames.

    Bytes before a start byte are dropped (``dropped_bytes``). A frame with a bad checksum is skipped and counted
    in ``checksum_errors``; one of the wrong length, with a dangling escape or cut short by a new start byte is
    skipped and counted in ``malformed``. ``skipped`` is the sum of the two.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.checksum_errors = 0
        self.malformed = 0
        self.dropped_bytes = 0
        self._in_frame = False
        self._escaped = False
        self._body = bytearray()

    @property
    def skipped(self) -> int:
        """Frames started but not delivered."""
        return self.checksum_errors + self.malformed

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completed, in order."""
        out: list[Frame] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                # Between frames, jump straight to the next start byte: garbage costs one find(), not a loop.
                j = data.find(SOF, i)
                if j < 0:
                    self.dropped_bytes += n - i
                    break
                self.dropped_bytes += j - i
                self._start()
                i = j + 1
                continue
            b = data[i]
            i += 1
            if b == SOF:  # a new frame began before this one ended: the unit restarted mid-frame, or noise
                self.malformed += 1
                self._start()
            elif b == EOF:
                self._end(out)
            elif self._escaped:
                self._escaped = False
                self._push(b ^ ESC_XOR)
            elif b == ESC:
                self._escaped = True
            else:
                self._push(b)
        return out

    def _start(self) -> None:
        self._in_frame = True
        self._escaped = False
        self._body.clear()

    def _push(self, b: int) -> None:
        self._body.append(b)
        if len(self._body) > BODY_LEN:
            self.malformed += 1
            self._in_frame = False  # drop the rest until the next start byte

    def _end(self, out: list[Frame]) -> None:
        self._in_frame = False
        body = self._body
        if self._escaped or len(body) != BODY_LEN:
            self.malformed += 1
            return
        data = bytes(body[1:4])
        if checksum(body[0], data) != body[4]:
            self.checksum_errors += 1
            return
        self.frames += 1
        out.append(Frame(body[0], data))


# --- typed messages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetFanPercent:
    """Blade -> unit: run the fan at ``percent`` (the unit runs the higher of its two blades' requests)."""

    percent: int


@dataclass(frozen=True)
class SetLed:
    """Blade -> unit: the unit's LED colour for this blade."""

    red: int
    green: int
    blue: int


@dataclass(frozen=True)
class ButtonPress:
    """Unit -> blade: the unit's button was pressed (once for the left blade, twice for the right)."""


@dataclass(frozen=True)
class AirflowTemp:
    """Unit -> blade: the EMC2101's temperature (internal sensor to the left blade, external to the right)."""

    temp_c: float


@dataclass(frozen=True)
class FanRpm:
    """Unit -> blade: the fan's speed."""

    rpm: float


@dataclass(frozen=True)
class Failsafe:
    """Unit -> blade: the unit ran the fan at 100 % (LED red) after ``silent_s`` seconds without a frame from
    this blade. ``reason`` is ``FAILSAFE_HEARTBEAT_LOST`` or ``FAILSAFE_NEVER_HEARD`` (others: a newer firmware)."""

    reason: int
    silent_s: int


Message = SetFanPercent | SetLed | ButtonPress | AirflowTemp | FanRpm | Failsafe


def encode_value(value: float) -> bytes:
    """24-bit big-endian ``value × 10``, truncated and capped to 0…0xFFFFFF as the unit's firmware does."""
    scaled = min(max(int(value * 10), 0), VALUE_MAX)
    return scaled.to_bytes(3, "big")


def decode_value(data: bytes) -> float:
    """The value of a 24-bit big-endian ``× 10`` field."""
    return int.from_bytes(data, "big") / 10.0


def set_fan_percent(percent: float) -> bytes:
    """Wire bytes asking for ``percent`` (rounded, clamped to 0–100)."""
    return encode(CMD_SET_FAN_PERCENT, (min(max(round(percent), 0), 100), 0, 0))


def set_led(red: int, green: int, blue: int) -> bytes:
    """Wire bytes setting the LED; each channel 0–255 (sent blue, green, red)."""
    for name, v in (("red", red), ("green", green), ("blue", blue)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name}: expected 0-255, got {v!r}")
    return encode(CMD_SET_LED, (blue, green, red))


def button_press() -> bytes:
    """Wire bytes of a button press (the unit's side; for tests and firmware simulation)."""
    return encode(CMD_BUTTON_PRESS)


def airflow_temp(temp_c: float) -> bytes:
    """Wire bytes reporting an airflow temperature (the unit's side)."""
    return encode(CMD_AIRFLOW_TEMP, encode_value(temp_c))


def fan_rpm(rpm: float) -> bytes:
    """Wire bytes reporting a fan speed (the unit's side)."""
    return encode(CMD_FAN_RPM, encode_value(rpm))


def failsafe(reason: int, silent_s: int) -> bytes:
    """Wire bytes of a failsafe event (the unit's side); ``silent_s`` capped to 0–65535."""
    return encode(CMD_FAILSAFE, (reason, *min(max(silent_s, 0), 0xFFFF).to_bytes(2, "big")))


def parse_frame(frame: Frame) -> Message:
    """The typed message of ``frame``; ``ProtocolError`` for a command this protocol does not have."""
    cmd, d = frame.cmd, frame.data
    if cmd == CMD_FAN_RPM:
        return FanRpm(decode_value(d))
    if cmd == CMD_AIRFLOW_TEMP:
        return AirflowTemp(decode_value(d))
    if cmd == CMD_BUTTON_PRESS:
        return ButtonPress()
    if cmd == CMD_FAILSAFE:
        return Failsafe(d[0], int.from_bytes(d[1:], "big"))
    if cmd == CMD_SET_FAN_PERCENT:
        return SetFanPercent(d[0])
    if cmd == CMD_SET_LED:
        return SetLed(red=d[2], green=d[1], blue=d[0])
    raise ProtocolError(f"unknown command 0x{cmd:02X} (data {d.hex(' ')})", "cmd")
