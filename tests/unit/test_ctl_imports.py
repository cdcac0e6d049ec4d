"""piclusterctl imports what a command uses and nothing else (bench/ctl_startup.py measures what that buys).

Each check runs a fresh interpreter and lists the modules it loaded: these are facts about imports, not timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nodeagent.protocol as protocol

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("paho", "rich", "ClusterShell", "msgpack", "sqlite3", "nodeagent.protocol.messages", "nodeagent.hw")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY) or m.startswith(tuple(h + "." for h in HEAVY)))


def test_version_loads_only_the_grammar() -> None:
    code = "import controller.cli as c\ntry:\n    c.main(['--version'])\nexcept SystemExit:\n    pass"
    modules = loaded_after(code)
    assert heavy(modules) == []
    assert not {m for m in modules if m.startswith("controller.")} - {"controller.cli", "controller.args"}


def test_a_run_loads_no_table_renderer_and_no_node_set_parser_until_it_needs_them() -> None:
    modules = loaded_after("import controller.cli, controller.run_kinds, controller.session")
    assert not [m for m in modules if m.startswith(("rich", "ClusterShell", "nodeagent.policy"))]
    modules = loaded_after("from controller.select import select\nselect('all', ['n2', 'n10', 'n1'])")
    assert not [m for m in modules if m.startswith("ClusterShell")]  # `all` needs no parser
    modules = loaded_after("from controller.select import select\nselect('n[1-2]', ['n1', 'n2'])")
    assert "ClusterShell.NodeSet" in modules


def test_top_and_plot_load_their_libraries_themselves() -> None:
    # Every other command, a run and a job's results included, goes without matplotlib and top's live screen.
    modules = loaded_after("import controller.cli, controller.run_kinds, controller.fleet_cli, controller.jobs_cli")
    assert not [m for m in modules if m.startswith(("matplotlib", "controller.top", "controller.plot"))]
    assert "rich.live" not in loaded_after("import controller.cli, controller.run_kinds, controller.jobs_cli")
    modules = loaded_after("import controller.plot_cli")
    assert not [m for m in modules if m.startswith("matplotlib")]  # until a picture is drawn
    assert "rich.live" in loaded_after("import controller.top")


def test_all_is_in_the_order_a_node_set_expands_in() -> None:
    from controller.select import expand, select

    known = ["n10", "n2", "n1", "a3", "b1", "a10"]
    assert select("all", known) == expand("a[3,10],b1,n[1-2,10]")


def test_the_protocol_package_serves_every_name_it_lists_on_first_use() -> None:
    assert sorted(protocol.__all__) == sorted(protocol._WHERE)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    assert "Event" in dir(protocol)


def test_the_param_help_names_every_key_the_planner_takes() -> None:
    from controller.args import PARAM_HELP
    from controller.hpl_plan import PARAM_KEYS

    assert PARAM_HELP.rpartition("keys: ")[2].split(", ") == list(PARAM_KEYS)
