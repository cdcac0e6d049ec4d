"""Every command that makes a node act is signed in one place: piclusterctl's through ``Session.command``, a leader
agent's MPI launches through ``nodeagent/mpi/relay.py``; both through ``nodeagent/security/seal.py``. Read from the
source with ``ast``, so a new command path (a new job kind's, a new subcommand's) that publishes on a command topic
by itself fails here instead of going out unsigned."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMAND_TOPICS = ("cluster_cmd", "node_cmd", "launch")
SIGNERS = {"controller/session.py", "nodeagent/mpi/relay.py"}


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _mentions_command_topic(call: ast.Call) -> bool:
    args = [*call.args, *(k.value for k in call.keywords)]
    return any(_name(c) in COMMAND_TOPICS for a in args for c in ast.walk(a) if isinstance(c, ast.Call))


def test_only_the_signers_publish_on_command_topics() -> None:
    found = []
    for path in [*REPO.glob("controller/*.py"), *REPO.glob("nodeagent/**/*.py")]:
        rel = str(path.relative_to(REPO))
        for call in _calls(path):
            if _name(call) == "publish" and _mentions_command_topic(call) and rel not in SIGNERS:
                found.append(f"{rel}:{call.lineno}")
    assert found == [], "publish on a command topic outside the signers; use Session.command"


def test_piclusterctl_encodes_commands_only_to_sign_them() -> None:
    found = [
        f"{path.relative_to(REPO)}:{call.lineno}"
        for path in REPO.glob("controller/*.py")
        if path.name != "session.py"
        for call in _calls(path)
        if _name(call) == "encode"
    ]
    assert found == []


def test_both_signers_seal() -> None:
    for rel in SIGNERS:
        assert "seal" in {_name(c) for c in _calls(REPO / rel)}, rel
