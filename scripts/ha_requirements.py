"""Print the PyPI requirements of the Home Assistant integrations the tests' HA loads (run with the HA venv's
python by scripts/ha-venv.sh): HA's default integrations, the ones the test configures, and their dependencies,
read from each integration's manifest.json. They are installed once, so HA runs with --skip-pip in tests."""

from __future__ import annotations

import json
import pathlib
import sys

import homeassistant.components as components
from homeassistant import bootstrap

ROOT = pathlib.Path(components.__file__).parent
WANTED = {"homeassistant", "http", "api", "mqtt", "logger", "network", "system_log"}


def requirements(start: set[str]) -> list[str]:
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(start)
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        seen.add(domain)
        manifest = json.loads((ROOT / domain / "manifest.json").read_text())
        found.update(manifest.get("requirements", []))
        todo += manifest.get("dependencies", [])
    return sorted(found)


if __name__ == "__main__":
    start = set(bootstrap.DEFAULT_INTEGRATIONS) | set(bootstrap.CORE_INTEGRATIONS) | WANTED | set(sys.argv[1:])
    print("\n".join(requirements(start)))
