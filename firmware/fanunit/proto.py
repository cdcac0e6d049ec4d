"""The blade <-> unit UART frames, the unit's end (MicroPython and CPython alike; no I/O, no clock).

A frame is ``0x7E cmd d0 d1 d2 chk 0x7F`` with ``chk = cmd ^ d0 ^ d1 ^ d2``; a cmd, data or chk byte equal to 0x7E,
0x7F or 0x7D travels as ``0x7D, byte ^ 0x20``. The agent's ``nodeagent/hw/fanunit_proto.py`` is the contract, and
the host tests feed both decoders the same bytes to prove they agree frame for frame.

Commands: 0x01 set fan percent ``[pct, 0, 0]`` and 0x02 set LED ``[blue, green, red]`` (blade -> unit); 0xA1
button press, 0xA2 airflow temperature and 0xA3 fan RPM (24-bit big-endian value x 10), and 0xA4 failsafe
``[reason, silent_s high, silent_s low]`` (unit -> blade).
"""

START = 0x7E
END = 0x7F
ESCAPE = 0x7D
FLIP = 0x20

SET_FAN_PERCENT = 0x01
SET_LED = 0x02
BUTTON_PRESS = 0xA1
AIRFLOW_TEMP = 0xA2
FAN_RPM = 0xA3
FAILSAFE = 0xA4

# Failsafe reasons (d0 of a FAILSAFE frame).
REASON_HEARTBEAT_LOST = 1  # the blade had spoken, then went silent for the heartbeat timeout
REASON_NEVER_HEARD = 2  # the blade did not speak within the timeout after the unit started

_BODY = 5  # cmd, d0, d1, d2, chk
_VALUE_MAX = 0xFFFFFF
_SILENT_MAX_S = 0xFFFF


def encode(cmd: int, d0: int = 0, d1: int = 0, d2: int = 0) -> bytes:
    """The escaped wire bytes of one frame; every argument is a byte (0-255)."""
    out = bytearray()
    out.append(START)
    for b in (cmd, d0, d1, d2, cmd ^ d0 ^ d1 ^ d2):
        if b < 0 or b > 0xFF:
            raise ValueError(f"frame byte out of range: {b}")
        if b in (START, END, ESCAPE):
            out.append(ESCAPE)
            out.append(b ^ FLIP)
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


def encode_tenths(cmd: int, value: float) -> bytes:
    """A frame carrying ``value`` as a 24-bit big-endian count of tenths, clamped to 0-0xFFFFFF."""
    n = int(value * 10)
    n = 0 if n < 0 else (_VALUE_MAX if n > _VALUE_MAX else n)
    return encode(cmd, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)


def fan_rpm(rpm: float) -> bytes:
    """The unit's fan-speed report."""
    return encode_tenths(FAN_RPM, rpm)


def airflow_temp(temp_c: float) -> bytes:
    """The unit's airflow-temperature report (below 0 °C reads as 0: the wire value is unsigned)."""
    return encode_tenths(AIRFLOW_TEMP, temp_c)


def button_press() -> bytes:
    """The unit's button-press event."""
    return encode(BUTTON_PRESS)


def failsafe(reason: int, silent_s: int) -> bytes:
    """The unit's failsafe event: why it ran the fan at full, and for how many seconds the blade was silent."""
    s = 0 if silent_s < 0 else (_SILENT_MAX_S if silent_s > _SILENT_MAX_S else int(silent_s))
    return encode(FAILSAFE, reason, s >> 8, s & 0xFF)


class Parser:
    """Bytes in, frames ``(cmd, d0, d1, d2)`` out, with the agent decoder's rules for bad input.

    Bytes outside a frame are dropped (``dropped``). A start byte inside a frame restarts it; an over-long body,
    a dangling escape or a wrong length count as ``malformed``; a bad check byte as ``bad_checksum``. The body
    never holds more than 6 bytes, so no input can make it grow.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.malformed = 0
        self.bad_checksum = 0
        self.dropped = 0
        self._body = bytearray()
        self._inside = False
        self._escaped = False

    def feed(self, data: bytes) -> list:
        """The frames ``data`` completes, in order (a frame may span several calls)."""
        out = []
        for b in data:
            if not self._inside:
                if b == START:
                    self._restart()
                else:
                    self.dropped += 1
            elif b == START:
                self.malformed += 1  # the previous frame was cut short: the sender restarted, or noise
                self._restart()
            elif b == END:
                self._close(out)
            elif self._escaped:
                self._escaped = False
                self._take(b ^ FLIP)
            elif b == ESCAPE:
                self._escaped = True
            else:
                self._take(b)
        return out

    def _restart(self) -> None:
        self._inside = True
        self._escaped = False
        self._body = bytearray()

    def _take(self, b: int) -> None:
        self._body.append(b)
        if len(self._body) > _BODY:
            self.malformed += 1
            self._inside = False  # skip to the next start byte

    def _close(self, out: list) -> None:
        self._inside = False
        body = self._body
        if self._escaped or len(body) != _BODY:
            self.malformed += 1
            return
        if body[0] ^ body[1] ^ body[2] ^ body[3] != body[4]:
            self.bad_checksum += 1
            return
        self.frames += 1
        out.append((body[0], body[1], body[2], body[3]))
