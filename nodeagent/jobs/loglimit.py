"""Rate limit for job output published as ``log`` events: a job printing 10k lines a second must not flood the
broker. Pure: the caller passes the time.

At most ``per_s`` lines go out in each one-second window; the lines beyond are counted, and the first line
published after them (or ``flush`` when the job ends) is preceded by a note ``suppressed K lines``. Every line
is still in the job's output.log (up to ``max_output_kb``).
"""

from __future__ import annotations

MAX_LINE = 500  # characters of one line in an event; the log file keeps the whole line


class LogLimiter:
    """Decides which output lines become log events."""

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self.window = -1.0
        self.sent = 0
        self.suppressed = 0
        self.total_suppressed = 0

    def offer(self, line: str, now: float) -> list[str]:
        """The messages to publish for one more output line at time ``now`` (seconds, any monotonic origin)."""
        if self.per_s <= 0:
            return []
        out: list[str] = []
        if now - self.window >= 1.0:
            self.window, self.sent = now, 0
            out += self._note()
        if self.sent < self.per_s:
            self.sent += 1
            out.append(line.rstrip("\r\n")[:MAX_LINE])
        else:
            self.suppressed += 1
            self.total_suppressed += 1
        return out

    def flush(self) -> list[str]:
        """The note for lines held back at the end of the job, if any."""
        return self._note()

    def _note(self) -> list[str]:
        if not self.suppressed:
            return []
        count, self.suppressed = self.suppressed, 0
        return [f"suppressed {count} line{'s' if count != 1 else ''} (over {self.per_s} per second; see output.log)"]
