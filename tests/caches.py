"""Where the tests' cached tools live, outside the repository: the rule of scripts/test-cache.sh, for the fixtures
that use the cache directly (tests/unit/test_caches.py holds the two to the same answer)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """PICLUSTER_TEST_CACHE, else /var/cache/picluster-test for root, else $XDG_CACHE_HOME/picluster-test."""
    if os.environ.get("PICLUSTER_TEST_CACHE"):
        return Path(os.environ["PICLUSTER_TEST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/picluster-test")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "picluster-test"
