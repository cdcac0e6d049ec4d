"""Several simulated agents on one host, started exactly as the README shows them: no --state-dir, no config file,
by an ordinary user (as root they would run their jobs as the picluster user, which this machine need not have).

Each must get its own state directory (``<root>/sim/<node-id>``), so that a cluster HPL over all of them runs
(before, they shared one spool and refused each other's job as a duplicate). The root is moved out of
/var/lib/picluster the way systemd moves it, through ``$STATE_DIRECTORY``, so parallel test runs never meet.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.localcluster import SIM_JOBS_USER, open_to_jobs, stop
from tests.conftest import REPO, Mosquitto, paho_env, reap_leftovers
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the console scripts of this environment: picluster-agent, piclusterctl
NODES = [f"sim{k}" for k in range(1, 6)]
SMALL = ("--param", "n=1000", "--param", "nb=100")


def readme_env(state_root: Path) -> dict[str, str]:
    env = paho_env(None)
    env["STATE_DIRECTORY"] = str(state_root)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as installed: picluster-mpi-launch on the PATH
    env.pop("PICLUSTER_BROKER", None)
    return env


def start_readme_agent(node: str, broker: Mosquitto, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``picluster-agent run --sim --node-id NODE --broker URL``, the README's line, nothing added, as an ordinary
    user (``nobody`` when the suite runs as root)."""
    argv = [str(BIN / "picluster-agent"), "run", "--sim", "--node-id", node, "--broker", broker.url]
    if os.geteuid() == 0:
        pw = pwd.getpwnam(SIM_JOBS_USER)
        argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *argv]
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)


@pytest.fixture
def five(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path / "state"
    root.mkdir()
    open_to_jobs(root)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(SIM_JOBS_USER)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    env = readme_env(root)
    procs = [start_readme_agent(n, broker, env, tmp_path / f"{n}.log") for n in NODES]
    try:
        yield root, env
    finally:
        for proc in procs:
            stop(proc, timeout_s=15)
        for node in NODES:
            reap_leftovers(root / "sim" / node)


def piclusterctl(broker: Mosquitto, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "piclusterctl"), "--broker", broker.url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)


def test_five_readme_agents_run_one_cluster_hpl_and_five_per_node(
    five: tuple[Path, dict[str, str]], broker: Mosquitto, tmp_path: Path
) -> None:
    root, env = five
    with Watcher(broker.url, "default") as w:
        w.wait("five simulated nodes online", lambda: w.online(*NODES), timeout_s=30)
    for node in NODES:  # each its own spool, lock and textfile
        own = root / "sim" / node
        assert (own / "spool.sqlite3").is_file() and (own / "picluster.prom").is_file()
        assert (own / "agent.lock").read_text().startswith(f"node={node} pid=")

    # A small N keeps five simulated nodes' HPL on 2 shared cores within seconds (the sim plan's default is ~6000).
    one = piclusterctl(broker, env, "run", "hpl", "--nodes", "all", "--json", *SMALL)
    assert one.returncode == 0, one.stdout + one.stderr
    out = json.loads(one.stdout)
    assert out["passed"] is True and out["mode"] == "cluster" and out["nodes"] == NODES
    assert "duplicate" not in one.stdout + one.stderr
    members = [r for r in out["runs"] if r["node"] != out["leader"]]
    assert len(members) == 4 and all(r["state"] == "finished" for r in members)
    for member in members:  # each member hosted its MPI daemon in its own job directory
        assert (root / "sim" / member["node"] / "control" / out["job"] / "launch.json").is_file()

    each = piclusterctl(broker, env, "run", "hpl", "--nodes", "all", "--per-node", "--json", *SMALL)
    assert each.returncode == 0, each.stdout + each.stderr
    runs = json.loads(each.stdout)["runs"]
    assert sorted(r["node"] for r in runs) == NODES
    assert [r["state"] for r in runs] == ["finished"] * 5 and all(r["passed"] for r in runs)

    # A sixth agent on a state directory already held: exit 2, naming the holder and the fix.
    held = root / "sim" / "sim3"
    holder = (held / "agent.lock").read_text().split()
    sixth = subprocess.run(
        [str(BIN / "picluster-agent"), "run", "--sim", "--node-id", "sim3", "--broker", broker.url],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert sixth.returncode == 2, sixth.stdout + sixth.stderr
    assert f"state directory {held} is in use by another agent (node sim3, {holder[1].replace('=', ' ')})" in (
        sixth.stderr
    )
    assert "--state-dir" in sixth.stderr and "agent.state_dir" in sixth.stderr
