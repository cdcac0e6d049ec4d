"""Fixtures for the hardware tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hw.trees import DATA


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[[str], Path]:
    """A function returning a private, writable copy of a recorded tree (symlinks kept as symlinks)."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(DATA / name, dest, symlinks=True)
        return dest

    return copy


@pytest.fixture
def player() -> Iterator[object]:
    """A Compute Blade smart fan unit played by the test at the far end of a real pseudo-terminal."""
    from tests.hw.test_fans import FanUnitPlayer  # here, not at the top: a test module imported by the conftest
    # would escape pytest's assertion rewriting

    p = FanUnitPlayer()
    try:
        yield p
    finally:
        p.close()
