"""The agent's state dir on a tiny tmpfs, filled to the last byte while the agent runs a job: the node goes on
(ticks, telemetry, the fan on its curve), says what is wrong and what to do (a log line and an ``alert`` naming
the directory), holds its events in memory, and writes them to disk once there is room: after that even a
killed agent delivers them when the broker is back."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.durable_helpers import wait_for
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

NAP = """
[[jobs.template]]
name = "nap"
argv = ["sleep", "{seconds}"]
heavy = false
[jobs.template.params.seconds]
type = "float"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: room for the spool, and soon for nothing more."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=False)


def fill(where: Path) -> Path:
    """Write zeros until the file system refuses (ENOSPC); the file that took the room."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28, exc
    with open(filler, "ab", buffering=0) as fh:  # the last partial block too
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_state_dir_keeps_the_node_safe_and_loses_no_event(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path, tiny: Path
) -> None:
    config = f'work_dir = "{tmp_path / "work"}"\n{NAP}'  # the job's own files elsewhere: only the spool is starved
    agent = agents.start("n1", config=config, extra=("--state-dir", str(tiny)))
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        filler = fill(tiny)
        proc = ctl(broker, cluster, "run", "nap", "--nodes", "n1", "--set", "seconds=4", "--detach", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job = json.loads(proc.stdout)["job"]
        alert = w.wait("the alert", lambda: [e for e in w.events("n1") if e.data.get("state_dir")])
        assert alert[0].data == {"state_dir": str(tiny), "spool": "memory", "free_bytes": 0}
        assert f"free space in {tiny}" in alert[0].message and "agent.state_dir" in alert[0].message
        line = next(ln for ln in agent.output().splitlines() if "event=state_dir_unwritable" in ln)
        assert f"path={tiny}" in line and "fix=" in line
        seen = w.telemetry_count("n1")
        w.wait("telemetry still flowing", lambda: w.telemetry_count("n1") >= seen + 4, 10)
        latest = w.fleet.nodes["n1"].telemetry  # the fan on its curve: no sensor error, no fail-safe
        assert latest is not None and latest.fan_mode == "auto" and not latest.errors
    assert agent.proc.poll() is None and "tick_failed" not in agent.output()
    # The broker goes; the job ends meanwhile: its verdict is only in the agent's memory (the disk is full).
    broker.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    broker.proc.wait()  # type: ignore[union-attr]
    wait_for("the job to end", lambda: f"event=job_finished job={job}" in agent.output(), 30)
    filler.unlink()  # room again: the held events go to disk at the next tick
    wait_for("the spool written again", lambda: "event=state_dir_writable" in agent.output(), 10)
    agent.stop(signal.SIGKILL)  # and the memory is gone
    broker.start()
    again = agents.start("n1", config=config, extra=("--state-dir", str(tiny)))
    wait_for("the replay", lambda: "event=spool_replay" in again.output(), 30)
    out = json.loads(ctl(broker, cluster, "results", job, "--json").stdout)
    assert out["state"] == "passed", out
