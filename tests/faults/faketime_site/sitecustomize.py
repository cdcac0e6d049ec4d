"""On the clock-jump test's agent's PYTHONPATH only. Debian 12's libfaketime 0.9.10 with
FAKETIME_DONT_FAKE_MONOTONIC=1 turns clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which Python 3.11's
time.sleep() makes, into EINVAL (libfaketime issue 426, fixed after 0.9.10): sleep through select() instead,
which it passes through. A relative sleep on the same monotonic clock; nothing else of the agent changes."""

import select
import time


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
