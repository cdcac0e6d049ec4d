"""The exception family every picluster module raises (gpiozero style: each is also the matching builtin).

Reasons travel back to the sender in ``rejected`` events and into the log, so a value taken from a message is
quoted through :func:`echo` (at most ``MAX_ECHO`` characters), and the errors that carry a reason clip it as a
last guard: a 250 KB payload must not become a 250 KB log line or event.
"""

MAX_ECHO = 200  # characters of a received value quoted back in a reason
MAX_REASON = 600  # characters of a whole reason (a template plus an echoed value or two)
MAX_FIELD = 200  # characters of a field path (map keys come from the sender)


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters: longer ones end with how long they were."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[: limit - 24]!r}... ({len(value)} long)"[:limit]
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 24]}... ({len(text)} long)"[:limit]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PiclusterError(Exception):
    """Base of every error picluster raises on purpose."""


class ConfigError(PiclusterError, ValueError):
    """A configuration file or option is wrong. The message names the file, the key and what was expected."""


class HardwareError(PiclusterError, OSError):
    """A device could not be read or driven. The message names the device and its path."""


class ProtocolError(PiclusterError, ValueError):
    """A message from the broker failed validation.

    ``field`` names the offending field (or ``""`` for the whole message) so the rejection can say which.
    """

    def __init__(self, reason: str, field: str = "") -> None:
        reason, field = clip(reason, MAX_REASON), clip(field, MAX_FIELD)
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class JobRejected(PiclusterError):
    """A job cannot be started on this node; ``reason`` says why in words meant for the operator."""

    def __init__(self, reason: str, field: str = "") -> None:
        reason, field = clip(reason, MAX_REASON), clip(field, MAX_FIELD)
        super().__init__(reason)
        self.reason = reason
        self.field = field


class JobFailed(PiclusterError):
    """A job ran but did not produce a valid result; the message says what went wrong and how to fix it."""
