"""Nothing in the repository fetches by URL: what a machine needs comes from apt and pip by package name, the only
way a fresh machine may reach the registries. HTTP to the tests' own servers on loopback is fine."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

# Commands that download by URL, and URLs that do not point back at this machine.
FETCHER = re.compile(r"\b(curl|wget|aria2c|git\s+clone|svn\s+(checkout|co))\b")
REMOTE_URL = re.compile(r"\b(?:https?|ftp)://(?!(?:127\.0\.0\.1|localhost|\[::1\])[:/])")
# Python modules that can fetch (urllib.parse only parses, so it is not one).
HTTP_CLIENTS = ("urllib.request", "http.client", "urllib3", "requests", "httpx", "aiohttp", "ftplib")
PY_DIRS = ("nodeagent", "controller", "scripts", "tests", "bench", "packaging")


def shell_steps() -> list[Path]:
    """Everything a build, setup or CI step runs as shell."""
    files = [REPO / ".ci" / "run", REPO / "Makefile", REPO / "packaging" / "debian" / "rules"]
    files += sorted((REPO / "scripts").glob("*.sh")) + sorted((REPO / "packaging").rglob("*.sh"))
    files += sorted((REPO / "packaging" / "debian").glob("*.post*")) + sorted(
        (REPO / "packaging" / "debian").glob("*.pre*")
    )
    return [f for f in files if f.is_file()]


def test_no_shell_step_fetches_a_url() -> None:
    found = []
    for path in shell_steps():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"(^|\s)#.*$", "", line)  # comments may cite a URL; commands may not fetch one
            if FETCHER.search(code) or REMOTE_URL.search(code):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == [], "fetch by package name (apt-get, pip), never by URL:\n" + "\n".join(found)


def http_client_modules() -> list[tuple[Path, ast.Module]]:
    out = []
    for top in PY_DIRS:
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            if any(name == c or name.startswith(c + ".") for name in names for c in HTTP_CLIENTS):
                out.append((path, tree))
    return out


def test_python_speaks_http_only_to_this_machine() -> None:
    """Every URL written in a module that imports an HTTP client points at loopback."""
    modules = http_client_modules()
    assert {p.name for p, _ in modules} >= {"hass.py", "test_prometheus.py", "agent_idle.py"}  # the scan sees them
    found = []
    for path, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and REMOTE_URL.search(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == [], "these modules may reach only loopback:\n" + "\n".join(found)


def test_the_checks_catch_a_fetch() -> None:
    """The patterns themselves: what they must flag and what they must let through."""
    for fetch in ('curl -fsSL -o x "$url"', "wget https://example.org/x.tgz", "pip install https://host/x.whl"):
        assert FETCHER.search(fetch) or REMOTE_URL.search(fetch), fetch
    for local in ("http://127.0.0.1:8123/api", "http://localhost:9100/metrics", "http://[::1]:80/", "pip download x"):
        assert not (FETCHER.search(local) or REMOTE_URL.search(local)), local
