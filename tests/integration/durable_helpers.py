"""A Mosquitto with persistence on (a config written here), that can be SIGKILLed and started again on the same
port and the same persistence file; piclusterctl as a real process with its own history file and paho version."""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from controller.history import History, JobRecord
from scripts.localcluster import stop, wait_port
from tests.conftest import REPO, Mosquitto, paho_env


class PersistentBroker(Mosquitto):
    """Mosquitto saving its state to ``workdir/mosquitto.db`` every second (``autosave_interval 1``), so a
    SIGKILL loses at most the last second, as a crash of a production broker loses at most its interval."""

    def durability(self) -> list[str]:
        """The config lines that decide what a crash loses."""
        return ["set_tcp_nodelay true", "persistence true", "autosave_interval 1", "max_queued_messages 10000"]

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # Started as root, mosquitto would drop to its own user, which cannot enter pytest's private tmp dirs.
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence_location {self.workdir}/\nlog_dest file {self.workdir / 'mosquitto.log'}\n"
            + "".join(f"{line}\n" for line in self.durability())
        )
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=quiet, stderr=quiet)
        try:
            wait_port(self.port, timeout_s=10)
        except TimeoutError:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save."""
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)
        self.proc = None

    def wait_saved(self) -> None:
        """Until the next autosave has written mosquitto.db (so the sessions made so far are in it)."""
        db = self.workdir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        wait_for("mosquitto.db to be saved", lambda: db.exists() and db.stat().st_mtime_ns != before, 10)


def wait_for(what: str, cond: Callable[[], object], timeout_s: float = 60.0, poll_s: float = 0.2) -> object:
    """Poll a condition on files or processes (not MQTT) until it holds; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def ctl_argv(url: str, cluster: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", cluster, *args]


def run_ctl(
    url: str, cluster: str, history: Path, *args: str, paho: str | None = None, timeout_s: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """piclusterctl as a process, with ``history`` as its history file and its persistent session's id fixed."""
    env = paho_env(paho) | {"PICLUSTER_HISTORY": str(history)}
    return subprocess.run(
        ctl_argv(url, cluster, *args), capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO
    )


def start_ctl(url: str, cluster: str, history: Path, *args: str, paho: str | None = None) -> subprocess.Popen[str]:
    env = paho_env(paho) | {"PICLUSTER_HISTORY": str(history)}
    return subprocess.Popen(
        ctl_argv(url, cluster, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )


def stored_job(history: Path, job_id: str) -> JobRecord | None:
    if not history.exists():
        return None
    h = History(history)
    try:
        return h.job(job_id)
    finally:
        h.close()


def stored_events(history: Path, job_id: str) -> list[dict[str, object]]:
    if not history.exists():
        return []
    h = History(history)
    try:
        return h.events(job_id)
    finally:
        h.close()


def newest_job(history: Path) -> JobRecord | None:
    if not history.exists():
        return None
    h = History(history)
    try:
        jobs = h.jobs(limit=1)
        return jobs[0] if jobs else None
    finally:
        h.close()
