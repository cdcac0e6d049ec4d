"""Waiting in tests: poll real messages until a condition holds. Never a blind sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    what: str, pump: Callable[[], None], cond: Callable[[], T], timeout_s: float, detail: Callable[[], str] = lambda: ""
) -> T:
    """Call ``pump()`` (which takes in what has arrived) and ``cond()`` until it is truthy; its value, or an
    AssertionError naming ``what`` (and ``detail()``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pump()
        value = cond()
        if value:
            return value
    extra = detail()
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f"; {extra}" if extra else ""))
