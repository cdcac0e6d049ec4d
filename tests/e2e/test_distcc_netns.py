"""``run distcc`` across network namespaces: three nodes, each its own host with its own address and agent; real
distccd on two of them, real make and gcc through real distcc on the leader, as the unprivileged jobs user.

The project is generated here: a few dozen C files and a main that links them."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.localcluster import SIM_JOBS_USER, open_to_jobs
from tests.conftest import REPO, paho_env
from tests.e2e.netns import NetCluster, net_cluster
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

FILES = 36  # plus main.c
USER = SIM_JOBS_USER  # the jobs user: distccd and the build never run as root


def write_project(path: Path) -> None:
    """``FILES`` units with enough arithmetic that gcc -O2 takes a moment on each, and a main calling them all."""
    path.mkdir(parents=True)
    for i in range(FILES):
        body = "\n".join(
            f"    s = (s * {k + i + 3}) ^ (s >> {k % 7 + 1}) ^ (x + {k}); a[{k % 32}] += s;" for k in range(400)
        )
        head = f"int unit{i}(int x) {{\n    volatile int a[32] = {{0}};\n    int s = x;\n"
        (path / f"unit{i:02d}.c").write_text(f"{head}{body}\n    return s + a[3];\n}}\n")
    calls = "\n".join(f"    s += unit{i}(s);" for i in range(FILES))
    decls = "\n".join(f"int unit{i}(int);" for i in range(FILES))
    (path / "main.c").write_text(
        f"{decls}\nint main(void) {{\n    int s = 1;\n{calls}\n    return s == 0x7fffffff;\n}}\n"
    )
    (path / "Makefile").write_text(
        "OBJS := $(patsubst %.c,%.o,$(wildcard *.c))\nprog: $(OBJS)\n\t$(CC) -o $@ $^\n"
        "%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n"
    )


def chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for p in (path, *path.rglob("*")):
        os.chown(p, pw.pw_uid, pw.pw_gid)


def wait_online(net: NetCluster, *nodes: str) -> None:
    with Watcher(net.local_url, net.cluster) as w:
        w.wait(f"{nodes} online with their addresses", lambda: w.online(*nodes) and all(
            w.fleet.nodes[n].facts.addresses for n in nodes), timeout_s=30)  # fmt: skip


def ctl(net: NetCluster, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        net.ctl(*args), capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=paho_env(None)
    )


def distccd_running(net: NetCluster) -> dict[int, list[int]]:
    """distccd processes (not zombies) in each node's namespace."""
    found: dict[int, list[int]] = {}
    for i in (1, 2, 3):
        for pid in net.lab.pids(i):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
            if name == "distccd" and state != "Z":
                found.setdefault(i, []).append(pid)
    return found


@pytest.fixture
def net(tmp_path: Path, cluster: str) -> Iterator[NetCluster]:
    if shutil.which("distccd") is None:
        pytest.fail("the distcc test needs distcc: run `make setup` (apt install distcc)")
    open_to_jobs(tmp_path)
    write_project(tmp_path / "build" / "proj")
    chown_tree(tmp_path / "build", USER)
    jobs = f'kinds = ["distcc"]\nbuild_root = "{tmp_path / "build"}"\n'  # every netns node's jobs user is USER
    with net_cluster(tmp_path, cluster, 3, jobs=jobs) as net:
        wait_online(net, "node1", "node2", "node3")
        yield net


def test_a_build_over_three_nodes_every_node_compiles_a_share(net: NetCluster) -> None:
    proc = ctl(net, "run", "distcc", "--nodes", "node[1-3]", "--set", "dir=proj", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["kind"] == "distcc" and out["mode"] == "cluster" and out["leader"] == "node1"
    assert out["wall_s"] > 0 and out["make_jobs"] == 3 * 4 * 2  # three simulated CM5s, four cores each, x2
    assert out["compiles_total"] == FILES + 1
    assert set(out["compiles_by_node"]) == {"node1", "node2", "node3"}
    assert all(n > 0 for n in out["compiles_by_node"].values()), out["compiles_by_node"]
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=0.01)
    assert set(out["temp_peak_by_node"]) == {"node1", "node2", "node3"}
    assert all(t is not None for t in out["temp_peak_by_node"].values())
    # distccd accepted compiles from the selection's addresses only, on each member's own address.
    allow = sorted(net.lab.node_ip(i) for i in (1, 2, 3))
    assert sorted(out["plan"]["allow"]) == allow
    for run in out["runs"][1:]:
        assert run["state"] == "cancelled"  # served until the build was done, then stopped
    argv = {r["node"]: r for r in out["runs"]}
    assert argv["node2"]["plan"]["host"] == net.lab.node_ip(2) and argv["node3"]["plan"]["host"] == net.lab.node_ip(3)
    project = net.tmp / "build" / "proj"
    assert (project / "prog").is_file() and len(list(project.glob("*.o"))) == FILES + 1
    assert (project / "unit00.o").stat().st_uid == pwd.getpwnam(USER).pw_uid  # built as the jobs user
    # Every worker's distccd says it served what the leader's distcc log counted for it.
    for node in ("node2", "node3"):
        job = net.tmp / node / "jobs" / f"{out['job']}.workers"
        served = (job / "distccd.log").read_text().count("COMPILE_OK")
        assert served == out["compiles_by_node"][node]
    assert distccd_running(net) == {}  # no daemon outlives the job
    # The build is in the history like any run: `results` shows each node's compiles and share, and the build.
    shown = ctl(net, "results", out["job"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    head, row = shown.stdout.splitlines()[1:3]
    assert head.split()[:4] == ["NODE", "RESULT", "WALL", "S"] and "COMPILED" in head and "SHARE" in head
    assert row.split()[:2] == ["node1", "PASSED"] and str(out["compiles_by_node"]["node1"]) in row.split()
    assert f"{FILES + 1} files compiled with make -j 24" in shown.stdout


def test_bad_input_is_refused_and_leaves_no_daemon(net: NetCluster) -> None:
    outside = ctl(net, "run", "distcc", "--nodes", "node[1-3]", "--set", "dir=/etc", "--json")
    assert outside.returncode == 1, outside.stdout + outside.stderr
    out = json.loads(outside.stdout)
    leader = out["runs"][0]
    assert leader["state"] == "rejected" and "dir '/etc' is outside jobs.build_root" in leader["reason"]
    assert distccd_running(net) == {}

    shell = ctl(net, "run", "distcc", "--nodes", "node[1-3]", "--set", "dir=proj", "--set", "target=all; rm -rf /")
    assert shell.returncode == 2 and "'all;' is not a make target name" in shell.stderr
    assert distccd_running(net) == {}

    net.procs["node3"].terminate()
    net.procs["node3"].wait(15)
    net.start_agent(3, 'distccd = "/nonexistent/distccd"\n')
    wait_online(net, "node3")
    missing = ctl(net, "run", "distcc", "--nodes", "node[1-3]", "--set", "dir=proj", "--json")
    assert missing.returncode == 1
    out = json.loads(missing.stdout)
    assert "node3 rejected: /nonexistent/distccd not found on this node" in out["reason"]
    assert "apt install distcc" in out["reason"]
    assert distccd_running(net) == {}  # node2's daemon, already up, was stopped too
