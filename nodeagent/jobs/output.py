"""A job's output on its way out: kept in output.log up to a cap, the last lines in memory, and lines published
as rate-limited log events (nodeagent/jobs/loglimit.py)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from nodeagent.jobs.loglimit import LogLimiter


class OutputPump:
    """Copies a job's output: the first ``limit`` bytes to output.log, the last lines in memory (for progress and
    for parsers when the middle was dropped), and lines as rate-limited log events."""

    def __init__(self, limit: int, limiter: LogLimiter, publish: Callable[[str], None]) -> None:
        self.limit = limit
        self.limiter = limiter
        self.publish = publish
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.written = 0
        self.dropped = 0

    def run(self, stream: Any, out: Any) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode(errors="replace")
            self.tail.append(line)
            if self.written < self.limit:
                out.write(raw[: self.limit - self.written])
                out.flush()
            self.dropped += max(0, len(raw) - max(0, self.limit - self.written))
            self.written += len(raw)
            for message in self.limiter.offer(line, time.monotonic()):
                self.publish(message)

    def finish(self) -> None:
        for message in self.limiter.flush():
            self.publish(message)

    def output(self, head: str) -> str:
        """What the kind parses: everything, or the kept head and the last lines when the middle was dropped."""
        if not self.dropped:
            return head
        return f"{head}\n[picluster: {self.dropped} bytes of output not kept]\n{''.join(self.tail)}"
