"""A fresh machine has no cache: the build scripts must work from nothing, through apt and pip by name.

The llama.cpp and Home Assistant tests reuse builds cached outside the repository, so on a machine that has them
those tests would pass even if the scripts could no longer build them. These tests run the same scripts with empty
scratch caches (and an empty pip cache: the registry itself must serve the sources), so `make test` fails when a
cache is the only reason the others pass. To stay affordable they stop where the rest is the same mechanism: the
llama.cpp build is fetched, unpacked, configured and compiles ggml's core library (the full build is what the
llama tests run, from the cache); Home Assistant's Python 3.13 is found and makes a venv with pip (the venv's
packages then come from pip by name, as in the HA tests' build).
"""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
BUILD_LLAMA = REPO / "scripts" / "build-llama.sh"
HA_VENV = REPO / "scripts" / "ha-venv.sh"


def run(argv: list[str | Path], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout)


def scratch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment with every cache the scripts use pointed at empty directories."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_CACHE", "HA_PYTHON")}
    env |= {"PICLUSTER_TEST_CACHE": str(tmp_path / "cache"), "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}
    return env | extra


def basics(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named tools of /usr/bin (what the scripts need besides the one under test)."""
    bin_dir = tmp_path / "basics"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "dirname", "id", "tail", *tools):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    return str(bin_dir)


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def python313() -> Path:
    """The Python 3.13 this machine has, found as scripts/ha-venv.sh finds it; without one, fail with its fix."""
    env = {k: v for k, v in os.environ.items() if k != "HA_PYTHON"}
    proc = run([HA_VENV, "--find-python"], env)
    if proc.returncode != 0:
        pytest.fail(proc.stderr)
    return Path(proc.stdout.strip())


def test_build_llama_fetches_configures_and_compiles_from_an_empty_cache(tmp_path: Path) -> None:
    proc = run([BUILD_LLAMA, "--check"], scratch_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cache = tmp_path / "cache" / "llama"  # <PICLUSTER_TEST_CACHE>/llama: the default layout
    assert proc.stdout.strip().splitlines()[-1] == str(cache)
    assert (cache / "sdist" / "llama_cpp_python-0.3.36.tar.gz").stat().st_size > 10_000_000
    assert (cache / "src" / ".version").read_text().strip() == "0.3.36"
    configured = (cache / "build" / "CMakeCache.txt").read_text()
    assert "GGML_RPC:BOOL=ON" in configured and "GGML_NATIVE:BOOL=OFF" in configured
    assert list((cache / "build").rglob("libggml-base.a")), "ggml-base was not compiled"
    assert (cache / "tiny.gguf").read_bytes()[:4] == b"GGUF"
    assert not (cache / ".complete").exists()  # a check is not a build: the llama tests' cache stays honest


def test_build_llama_names_the_missing_build_tools(tmp_path: Path) -> None:
    # python3 (Debian's, with pip) and the shell's basics, but no cmake, compiler or make.
    proc = run([BUILD_LLAMA, "--check"], scratch_env(tmp_path, PATH=basics(tmp_path, "env", "nproc", "python3")))
    assert proc.returncode == 1
    assert "missing cmake g++ make" in proc.stderr
    assert "sudo apt-get install -y cmake g++ make" in proc.stderr
    assert not (tmp_path / "cache").exists()  # refused before touching anything


def test_ha_venv_finds_python_313_with_an_empty_cache(tmp_path: Path, python313: Path) -> None:
    proc = run([HA_VENV, "--find-python"], scratch_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    found = proc.stdout.strip()
    assert found == str(python313)
    assert not (tmp_path / "cache").exists()  # finding builds nothing
    # What the build does first with it: a venv that has pip.
    assert run([found, "-m", "venv", tmp_path / "venv"], os.environ.copy()).returncode == 0
    pip = run([tmp_path / "venv" / "bin" / "python", "-m", "pip", "--version"], os.environ.copy())
    assert pip.returncode == 0 and "python 3.13" in pip.stdout, pip.stdout + pip.stderr


def test_ha_python_is_looked_for_in_order(tmp_path: Path, python313: Path) -> None:
    """HA_PYTHON, then python3.13 on PATH, then pyenv which, then pyenv prefix: each a wrapper of the real 3.13."""
    on_path = script(tmp_path / "path" / "python3.13", f'exec {python313} "$@"\n')
    chosen = script(tmp_path / "chosen" / "python", f'exec {python313} "$@"\n')
    selected = script(tmp_path / "pyenv-root" / "shims" / "python3.13", f'exec {python313} "$@"\n')
    installed = script(
        tmp_path / "pyenv-root" / "versions" / "3.13.9" / "bin" / "python3.13", f'exec {python313} "$@"\n'
    )
    # A pyenv (in $PYENV_ROOT/bin, where its installer puts it) that knows 3.13.9; `which` only when "selected".
    script(
        tmp_path / "pyenv-root" / "bin" / "pyenv",
        f'case "$1 $2" in\n  "which python3.13") [ -f {tmp_path}/selected ] && echo {selected} && exit 0; exit 127 ;;\n'
        f'  "prefix 3.13") echo {installed.parent.parent} ;;\n  *) exit 1 ;;\nesac\n',
    )
    base = basics(tmp_path)
    env = scratch_env(tmp_path, PATH=base, HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "pyenv-root"))

    def found(**extra: str) -> str:
        proc = run([HA_VENV, "--find-python"], env | extra)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert found() == str(installed)  # only pyenv's prefix knows one
    (tmp_path / "selected").touch()
    assert found() == str(selected)
    assert found(PATH=f"{on_path.parent}:{base}") == str(on_path)
    assert found(PATH=f"{on_path.parent}:{base}", HA_PYTHON=str(chosen)) == str(chosen)


def test_no_python_313_fails_with_what_to_install(tmp_path: Path) -> None:
    env = scratch_env(tmp_path, PATH=basics(tmp_path), HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "no-pyenv"))
    proc = run([HA_VENV], env)
    assert proc.returncode == 1
    assert "needs Python 3.13 and none was found" in proc.stderr
    assert "pyenv install 3.13" in proc.stderr and "HA_PYTHON=/path/to/python3.13" in proc.stderr
    assert "its archive has no python3.13" in proc.stderr
    assert proc.stdout == ""  # no interpreter path for a caller to mistake for success
    assert not (tmp_path / "cache").exists()


def test_ha_python_that_is_not_313_is_refused_not_replaced(tmp_path: Path, python313: Path) -> None:
    # A 3.13 is on PATH, but the one asked for by name wins, and it is wrong: say so.
    env = scratch_env(tmp_path, PATH=f"{python313.parent}:{basics(tmp_path)}", HA_PYTHON=sys.executable)
    proc = run([HA_VENV], env)
    assert proc.returncode == 1
    assert (
        f"HA_PYTHON={sys.executable} is not a working Python 3.13 (Python {platform.python_version()})" in proc.stderr
    )
    proc = run([HA_VENV], env | {"HA_PYTHON": str(tmp_path / "nothing")})
    assert proc.returncode == 1 and "(not found)" in proc.stderr
