"""The log-event rate limit: never more than N lines a second, and every line published or counted."""

from __future__ import annotations

import collections

from hypothesis import given
from hypothesis import strategies as st

from nodeagent.jobs.loglimit import LogLimiter


def test_ten_thousand_lines_in_a_second_become_five_and_a_note() -> None:
    lim = LogLimiter(5)
    out = [m for i in range(10_000) for m in lim.offer(f"line {i}\n", 100.0 + i / 10_000)]
    assert out == [f"line {i}" for i in range(5)]
    assert lim.flush() == ["suppressed 9995 lines (over 5 per second; see output.log)"]
    assert lim.flush() == []


def test_the_note_comes_before_the_next_window_lines() -> None:
    lim = LogLimiter(1)
    assert lim.offer("a", 0.0) == ["a"]
    assert lim.offer("b", 0.5) == []
    assert lim.offer("c", 1.2) == ["suppressed 1 line (over 1 per second; see output.log)", "c"]


def test_zero_publishes_nothing() -> None:
    lim = LogLimiter(0)
    assert lim.offer("a", 0.0) == [] and lim.flush() == []


@given(
    st.integers(min_value=1, max_value=20),
    st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=300),
)
def test_every_line_is_published_or_counted_and_windows_hold_the_rate(per_s: int, gaps: list[float]) -> None:
    lim = LogLimiter(per_s)
    now, published, counted = 0.0, 0, 0
    sent_at: list[float] = []
    for i, gap in enumerate(gaps):
        now += gap / 10
        for msg in lim.offer(f"l{i}", now):
            if msg.startswith("suppressed"):
                counted += int(msg.split()[1])
            else:
                published += 1
                sent_at.append(now)
    for msg in lim.flush():
        counted += int(msg.split()[1])
    assert published + counted == len(gaps)
    # No one-second span holds more than 2 windows' worth (windows start at the first line after a second).
    by_window = collections.Counter(int(t) for t in sent_at)
    assert all(count <= 2 * per_s for count in by_window.values())
