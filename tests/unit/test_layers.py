"""The rooms of the code and what each may import (docs/architecture.md), read from the source with ``ast``.

Every ``import`` counts: at module level, inside functions (a lazy import is still a dependency) and under
``TYPE_CHECKING``. A rule names the room it governs and the only rooms of ``nodeagent`` it may reach, or the
rooms it must not reach.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("nodeagent", "controller")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, *, module_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``path``; ``from a import b`` is ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if is_module(full) else base


def sources(room: str) -> list[Path]:
    path = REPO.joinpath(*room.split("."))
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def inside(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def internal(module: str) -> bool:
    return inside(module, PACKAGES)


# (room, the nodeagent rooms it may import; None: any) and (room, the rooms it must not import).
ONLY: list[tuple[str, tuple[str, ...]]] = [
    # piclusterctl speaks the protocol through an MQTT session, judges by pure policy: never the node's machinery.
    (
        "controller",
        (
            "controller",
            "nodeagent.protocol",
            "nodeagent.mqtt",
            "nodeagent.policy",
            "nodeagent.security",
            "nodeagent.errors",
        ),
    ),
    ("nodeagent.protocol", ("nodeagent.protocol", "nodeagent.errors")),
    # Keys, signatures and the command gate: the wire contract and nothing of the node's.
    ("nodeagent.security", ("nodeagent.security", "nodeagent.protocol", "nodeagent.errors")),
    ("nodeagent.policy", ("nodeagent.policy", "nodeagent.protocol", "nodeagent.errors")),
    ("nodeagent.mqtt", ("nodeagent.mqtt", "nodeagent.protocol", "nodeagent.errors")),
    ("nodeagent.hw", ("nodeagent.hw", "nodeagent.protocol", "nodeagent.errors")),
    ("nodeagent.ha", ("nodeagent.ha", "nodeagent.mqtt", "nodeagent.protocol", "nodeagent.errors")),
    ("nodeagent.metrics", ("nodeagent.metrics", "nodeagent.protocol", "nodeagent.errors")),
    (
        "nodeagent.jobs",
        ("nodeagent.jobs", "nodeagent.config", "nodeagent.protocol", "nodeagent.errors"),
    ),
    (
        "nodeagent.mpi",
        (
            "nodeagent.mpi",
            "nodeagent.jobs",
            "nodeagent.config",
            "nodeagent.mqtt",
            "nodeagent.protocol",
            "nodeagent.security",
            "nodeagent.errors",
        ),
    ),
]
NEVER: list[tuple[str, tuple[str, ...]]] = [
    # Home Assistant and Prometheus see telemetry, never the hardware.
    ("nodeagent.ha", ("nodeagent.hw",)),
    ("nodeagent.metrics", ("nodeagent.hw",)),
    # The policies are pure: no I/O room.
    ("nodeagent.policy", ("nodeagent.hw", "nodeagent.mqtt", "nodeagent.node", "nodeagent.jobs", "nodeagent.agent")),
    # Command handling gets emit and its parts handed to it; it never reaches back into the agent.
    ("nodeagent.node.commands", ("nodeagent.agent", "nodeagent.wiring")),
    ("nodeagent.node", ("nodeagent.agent", "nodeagent.wiring")),
    # The loop is handed its parts: it never builds them.
    ("nodeagent.agent", ("nodeagent.wiring",)),
    # Fan backends know the interface only; only the factory knows the backends.
    ("nodeagent.hw.fans.base", ("nodeagent.hw.fans",)),
]


def violations(room: str, allowed: tuple[str, ...] | None, banned: tuple[str, ...]) -> list[str]:
    found = []
    for path in sources(room):
        for line, module in imports_of(path):
            if module == module_name(path) or not internal(module):
                continue
            if (allowed is not None and not inside(module, allowed)) or inside(module, banned):
                found.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize(("room", "allowed"), ONLY, ids=[r for r, _ in ONLY])
def test_a_room_imports_only_the_rooms_it_may(room: str, allowed: tuple[str, ...]) -> None:
    assert violations(room, allowed, ()) == []


@pytest.mark.parametrize(("room", "banned"), NEVER, ids=[r for r, _ in NEVER])
def test_a_room_never_imports_what_it_must_not(room: str, banned: tuple[str, ...]) -> None:
    banned = tuple(b for b in banned if b != room)
    assert violations(room, None, banned) == []


def test_fan_backends_import_the_interface_not_each_other() -> None:
    fans = REPO / "nodeagent" / "hw" / "fans"
    for path in fans.glob("*.py"):
        if path.stem in ("factory", "__init__"):
            continue
        reached = {m for _, m in imports_of(path) if m.startswith("nodeagent.hw.fans")}
        assert reached <= {"nodeagent.hw.fans", "nodeagent.hw.fans.base"}, f"{path.name} imports {reached}"


def test_no_module_level_import_cycles() -> None:
    """Module-level imports form no cycle (a lazy import inside a function is how a cycle used to be hidden)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = module_name(path)
            graph[name] = {m for _, m in imports_of(path, module_level_only=True) if internal(m) and m != name}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def test_the_rules_read_real_imports() -> None:
    """The walker sees module-level and function-level imports, so an empty violation list means something."""
    found = {m for _, m in imports_of(REPO / "nodeagent" / "__main__.py")}
    assert "nodeagent.wiring" in found  # imported inside serve()
    assert "nodeagent.protocol.version" in found  # at module level
    assert violations("nodeagent.node", None, ("nodeagent.hw",))  # node drives hardware: the check can fail


def test_the_loop_stays_a_page() -> None:
    """agent.py holds the loop, reload and emit; what it is handed is built in wiring.py and the rooms."""
    lines = len((REPO / "nodeagent" / "agent.py").read_text().splitlines())
    assert lines < 300, f"nodeagent/agent.py has {lines} lines: move what is not the loop into its room"


def test_piclusterctl_parses_without_the_mqtt_client_or_rich() -> None:
    """``piclusterctl --version`` and ``--help`` need the grammar only: no paho, no rich, nothing of the node."""
    code = (
        "import sys; import controller.cli as c; c.build_parser(); "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('paho', 'rich') or "
        "m.startswith(('nodeagent.hw', 'nodeagent.node', 'nodeagent.jobs', 'controller.session'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
