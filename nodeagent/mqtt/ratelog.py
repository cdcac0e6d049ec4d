"""Log lines about bad input, at a bounded rate: whoever can reach the broker must not be able to fill the journal.

Each kind of line (its ``key``: ``bad_message``, ``bad_power``, …) may be logged ``burst`` times at once and then
``burst`` times per ``per_s`` seconds (a token bucket). Lines over the rate are counted, not written; the next
line that passes is preceded by one ``event=log_suppressed key=… lines=N`` line, so nothing goes missing silently.
Keys are the program's own names, never values from a message, and there are at most ``MAX_KEYS`` of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 64


@dataclass
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class RateLog:
    """A logger's ``warning``/``info``/``debug`` for one kind of line at a time, at most ``burst`` per ``per_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        per_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_s <= 0:
            raise ValueError(f"burst must be at least 1 and per_s above 0, got {burst} and {per_s}")
        self.logger = logger
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # paho's thread and the agent's loop both log

    def allow(self, key: str) -> bool:
        """Take one of ``key``'s tokens for something other than a log line (an answer to bad input): True when
        the rate allows it, else the refusal is counted (``suppressed``)."""
        return self._take(key)[0]

    def _take(self, key: str) -> tuple[bool, int]:
        """(allowed, lines suppressed before this one) for ``key`` now."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_KEYS:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            rate = self.burst / self.per_s
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                bucket.suppressed += 1
                return False, 0
            bucket.tokens -= 1.0
            suppressed, bucket.suppressed = bucket.suppressed, 0
        return True, suppressed

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` if ``key``'s rate allows it; True when it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        allowed, suppressed = self._take(key)
        if not allowed:
            return False
        if suppressed:
            self.logger.log(level, "event=log_suppressed key=%s lines=%d per_s=%g", key, suppressed, self.per_s)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def debug(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def suppressed(self, key: str) -> int:
        """Lines of ``key`` counted but not written since its last written line."""
        with self._lock:
            bucket = self._buckets.get(key)
            return bucket.suppressed if bucket else 0
