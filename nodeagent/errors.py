"""The exception family every picluster module raises (gpiozero style: each is also the matching builtin)."""


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
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class JobRejected(PiclusterError):
    """A job cannot be started on this node; ``reason`` says why in words meant for the operator."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class JobFailed(PiclusterError):
    """A job ran but did not produce a valid result; the message says what went wrong and how to fix it."""
