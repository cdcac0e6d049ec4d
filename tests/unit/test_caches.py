"""The Python and shell sides agree on where the test cache is."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.caches import cache_dir
from tests.conftest import REPO


def shell_cache_dir(env: dict[str, str]) -> str:
    script = f"source {REPO / 'scripts' / 'test-cache.sh'} && picluster_test_cache"
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("override", [None, "/tmp/somewhere/cache"])
def test_the_shell_and_python_name_the_same_cache(override: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if override is None:
        monkeypatch.delenv("PICLUSTER_TEST_CACHE", raising=False)
    else:
        monkeypatch.setenv("PICLUSTER_TEST_CACHE", override)
    assert shell_cache_dir(dict(os.environ)) == str(cache_dir())
    if override:
        assert cache_dir() == Path(override)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory another user can use (pytest's own are root's alone)."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o777)
        yield Path(name)


def test_anyone_but_root_gets_a_cache_in_their_home(open_dir: Path) -> None:
    """/var/cache is root's: another user's cache goes under XDG_CACHE_HOME (~/.cache), on both sides."""
    tmp_path = open_dir
    # Copies where that user can read them, whoever owns the clone.
    shutil.copy(REPO / "scripts" / "test-cache.sh", tmp_path)
    shutil.copy(REPO / "tests" / "caches.py", tmp_path)
    both = (
        f"source {tmp_path}/test-cache.sh && picluster_test_cache && cd {tmp_path} && "
        "/usr/bin/python3 -c 'from caches import cache_dir; print(cache_dir())'"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", both]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(nobody, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [f"{tmp_path}/.cache/picluster-test"] * 2
    out = subprocess.run(nobody, env=env | {"XDG_CACHE_HOME": "/x"}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["/x/picluster-test"] * 2
