"""What the unit does, as a function of what the blades said and when: fan duty, LED colours, failsafe events.

No hardware and no clock: every call takes ``now_ms``, a millisecond count that only grows (``app`` makes one
from ``time.ticks_ms``). The rules:

- A blade is *waiting* from the unit's start until its first valid frame, *live* while it keeps speaking, and
  *lost* once it has been silent for ``timeout_ms`` (from its last frame, or from the start if it never spoke).
- The fan follows the blades (the highest duty any live blade asked for) only while every expected blade is live.
  Otherwise it runs at 100 %: at boot until the agents speak, and whenever one falls silent.
- A lost blade's LED is ``failsafe_rgb`` (red); otherwise it shows the colour its blade last asked for (off
  until then).
- The first valid frame from a lost blade makes it live again and is answered at once with a failsafe event
  (reason and seconds of silence), so the agent learns the unit ran the fan at full without it.

A valid frame is a set-fan frame with a percent of 0-100 or a set-LED frame. Anything else (frames the unit
itself sends, unknown commands, a percent above 100) is counted in ``rejected`` and keeps nobody alive.
"""

from fanunit import proto

WAITING = "waiting"
LIVE = "live"
LOST = "lost"

OFF = (0, 0, 0)
FULL = 100


class Link:
    """One blade's side of the unit: what it asked for, when it last spoke, and its failsafe state."""

    def __init__(self, name: str, expected: bool, now_ms: int) -> None:
        self.name = name
        self.expected = expected
        self.state = WAITING
        self.silent_since_ms = now_ms  # its last valid frame, or the unit's start
        self.percent = None  # the duty it asked for last (None: not yet)
        self.rgb = OFF  # the LED colour it asked for last
        self.parser = proto.Parser()
        self.rejected = 0
        self.failsafes = 0  # how many times this blade was lost
        self.lost_reason = 0  # why it was lost last (proto.REASON_*)


class Controller:
    """The unit's decisions for the blades ``names`` (``expected`` must all be live for the fan to follow)."""

    def __init__(
        self,
        names: tuple,
        expected: tuple,
        timeout_ms: int,
        now_ms: int,
        failsafe_rgb: tuple = (255, 0, 0),
    ) -> None:
        for name in expected:
            if name not in names:
                raise ValueError(f"expected link {name!r} is not one of {names!r}")
        if timeout_ms <= 0:
            raise ValueError(f"heartbeat timeout must be above 0 ms, got {timeout_ms!r}")
        self.timeout_ms = timeout_ms
        self.failsafe_rgb = failsafe_rgb
        self.links = {}
        for name in names:
            self.links[name] = Link(name, name in expected, now_ms)

    def receive(self, name: str, data: bytes, now_ms: int) -> list:
        """Take the bytes blade ``name`` sent; the frames to send back to it (a failsafe event, or nothing)."""
        link = self.links[name]
        replies = []
        for cmd, d0, d1, d2 in link.parser.feed(data):
            if cmd == proto.SET_FAN_PERCENT and d0 <= FULL:
                link.percent = d0
            elif cmd == proto.SET_LED:
                link.rgb = (d2, d1, d0)  # sent blue, green, red
            else:
                link.rejected += 1
                continue
            if link.state == LOST:
                replies.append(proto.failsafe(link.lost_reason, (now_ms - link.silent_since_ms) // 1000))
            link.state = LIVE
            link.silent_since_ms = now_ms
        return replies

    def update(self, now_ms: int) -> list:
        """Move blades silent for ``timeout_ms`` to lost; the names of the blades lost just now."""
        lost = []
        for link in self.links.values():
            if link.state != LOST and now_ms - link.silent_since_ms >= self.timeout_ms:
                if link.state == WAITING and not link.expected:
                    continue  # a blade nobody expects may stay away: it holds nothing at full
                link.lost_reason = proto.REASON_NEVER_HEARD if link.state == WAITING else proto.REASON_HEARTBEAT_LOST
                link.state = LOST
                link.failsafes += 1
                lost.append(link.name)
        return lost

    def fan_percent(self) -> int:
        """The duty the fan must run at now."""
        if self.failsafe_active() or self.booting():
            return FULL
        asked = [link.percent for link in self.links.values() if link.state == LIVE]
        if not asked or None in asked:
            return FULL  # a live blade that has not asked for a duty yet gets full, not a guess
        return max(asked)

    def booting(self) -> bool:
        """An expected blade has not spoken yet, and its timeout has not run out."""
        return any(link.expected and link.state == WAITING for link in self.links.values())

    def failsafe_active(self) -> bool:
        """Some blade is lost."""
        return any(link.state == LOST for link in self.links.values())

    def led(self, name: str) -> tuple:
        """The colour blade ``name``'s LED must show now."""
        link = self.links[name]
        return self.failsafe_rgb if link.state == LOST else link.rgb
