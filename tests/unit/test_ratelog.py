"""Bad-input log lines are rate-limited per kind, the rest counted and reported (nodeagent/mqtt/ratelog.py)."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.mqtt.ratelog import MAX_KEYS, RateLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_a_burst_passes_then_lines_are_counted_and_reported_with_the_next(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLog(logging.getLogger("t.ratelog"), burst=3, per_s=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, "t.ratelog"):
        written = [rl.warning("bad_message", "event=bad_message n=%d", i) for i in range(10)]
        assert written == [True] * 3 + [False] * 7 and rl.suppressed("bad_message") == 7
        assert rl.warning("bad_power", "event=bad_power")  # another kind has its own budget
        clock.now += 20.0  # one line's worth of tokens (3 per 60 s)
        assert rl.warning("bad_message", "event=bad_message n=%d", 10)
        assert not rl.warning("bad_message", "event=bad_message n=%d", 11)
    assert _lines(caplog) == [
        "event=bad_message n=0",
        "event=bad_message n=1",
        "event=bad_message n=2",
        "event=bad_power",
        "event=log_suppressed key=bad_message lines=7 per_s=60",
        "event=bad_message n=10",
    ]


def test_keys_are_bounded() -> None:
    rl = RateLog(logging.getLogger("t.ratelog"), burst=1, clock=Clock())
    for i in range(MAX_KEYS * 3):
        rl.warning(f"k{i}", "x")
    assert len(rl._buckets) == MAX_KEYS


def test_a_limit_that_lets_nothing_through_is_refused() -> None:
    with pytest.raises(ValueError, match="burst must be at least 1"):
        RateLog(logging.getLogger("t"), burst=0)


@given(st.lists(st.tuples(st.floats(0, 30), st.sampled_from("ab")), max_size=200), st.integers(1, 5))
def test_never_more_than_the_rate_and_every_line_accounted_for(events: list, burst: int) -> None:
    clock = Clock()
    logger = logging.getLogger("t.ratelog.prop")
    logger.propagate = False
    seen: list[tuple[float, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((clock.now, record.getMessage()))

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        rl = RateLog(logger, burst=burst, per_s=60.0, clock=clock)
        for dt, key in events:
            clock.now += dt
            rl.info(key, f"line {key}")
    finally:
        logger.removeHandler(handler)
    for key in "ab":
        calls = sum(1 for _, k in events if k == key)
        written = [t for t, m in seen if m == f"line {key}"]
        reported = sum(
            int(m.group(1)) for _, line in seen if (m := re.match(rf"event=log_suppressed key={key} lines=(\d+)", line))
        )
        assert len(written) + reported + rl.suppressed(key) == calls
        for i, t in enumerate(written):  # a window of 60 s: the burst, plus what 60 s of the rate refilled
            assert sum(1 for u in written[i:] if u - t < 60.0) <= 2 * burst
