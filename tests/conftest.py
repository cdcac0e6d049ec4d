"""Shared fixtures: a real Mosquitto on a free loopback port, and simulated agents as real processes.

Every process a fixture starts is stopped by its PID when the test ends, pass or fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nodeagent.config import JobsSection
from nodeagent.jobs.runner import Runner
from scripts.localcluster import (
    SIM_JOBS_USER,
    agent_argv,
    free_port,
    open_to_jobs,
    start_mosquitto,
    stop,
)
from tests.signing import operator  # noqa: F401 (a fixture: an operator key piclusterctl signs with)

REPO = Path(__file__).resolve().parent.parent


def _own_temproot() -> None:
    """As root, this checkout's tests keep their temporary directories under a root of their own.

    Jobs run as an unprivileged user (SIM_JOBS_USER), who must be able to enter its job directories below pytest's
    0700 ones (``open_to_jobs`` adds search permission). pytest sets ``/tmp/pytest-of-root`` back to 0700 at the
    start of every session, so a suite started meanwhile in another checkout would lock this one's jobs out; a
    root per checkout is touched by this checkout's sessions only."""
    if os.geteuid() != 0 or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    root = Path(tempfile.gettempdir()) / f"picluster-pytest-{hashlib.sha1(str(REPO).encode()).hexdigest()[:10]}"
    root.mkdir(mode=0o755, exist_ok=True)
    st = root.lstat()
    if st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)


_own_temproot()
# `make test` installs both paho majors here (pure Python, pip --target), so every agent test runs on both.
PAHO_DIRS = {"1.6": REPO / ".cache" / "paho1", "2.x": REPO / ".cache" / "paho2"}


@dataclass
class Mosquitto:
    """A private broker. ``restart()`` keeps the port (for broker-restart tests)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_mosquitto(self.workdir, self.port, log_file=self.workdir / "mosquitto.log")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(autouse=True, scope="session")
def _private_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """piclusterctl processes started by tests keep their job history under a temporary XDG_DATA_HOME, never in
    the home directory of whoever runs the suite."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it (apt install mosquitto)")
    mosq = Mosquitto(tmp_path)
    mosq.start()
    try:
        yield mosq
    finally:
        mosq.stop()


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> str:
    """A cluster name unique to the test, so retained messages of one test never leak into another."""
    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


@dataclass
class AgentProc:
    node: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        return stop(self.proc, sig, timeout_s) or 0

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def paho_env(variant: str | None) -> dict[str, str]:
    """Environment that makes a child process import the requested paho major version."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if variant is not None:
        path = PAHO_DIRS[variant]
        if not path.is_dir():
            pytest.fail(f"paho {variant} is not installed in {path}: run `make test` (it installs both)")
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env['PYTHONPATH']}"
    return env


@pytest.fixture
def agents(tmp_path: Path, broker: Mosquitto, cluster: str) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path, broker, cluster)
    try:
        yield factory
    finally:
        factory.stop_all()


class AgentFactory:
    """Starts `picluster-agent run --sim` processes against the test broker."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, cluster: str) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.cluster = cluster
        self.started: list[AgentProc] = []

    def start(
        self,
        node: str,
        *,
        paho: str | None = None,
        config: str = "",
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        jobs_user: str = SIM_JOBS_USER,
    ) -> AgentProc:
        """One agent; ``env`` adds to its environment; its jobs run as ``jobs_user`` (when the suite runs as root)."""
        state = self.tmp_path / node
        state.mkdir(exist_ok=True)
        open_to_jobs(state)  # jobs run as SIM_JOBS_USER, never root
        conf = state / "agent.toml"
        conf.write_text(f'[agent]\ntick_s = 0.5\n[jobs]\nprogress_interval_s = 0.5\nuser = "{jobs_user}"\n' + config)
        log = state / "agent.log"
        argv = agent_argv(node, self.broker.url, self.cluster, state, "--config", str(conf), *extra)
        environ = paho_env(paho) | (env or {})
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=environ, cwd=state)
        agent = AgentProc(node, proc, log)
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop()
        for node in {a.node for a in self.started}:
            reap_leftovers(self.tmp_path / node)


def reap_leftovers(state_dir: Path) -> None:
    """What an agent's next start on ``state_dir`` does: kill processes of jobs a killed agent left behind and
    remove their private temporary directories, so no test leaves anything running or in /tmp."""
    jobs = JobsSection(user=SIM_JOBS_USER)
    Runner(jobs, state_dir / "jobs", cores=1, sim=True, emit=lambda *a, **k: None).reap_orphans()


def ctl(broker: Mosquitto, cluster: str, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run piclusterctl as a real process against the test broker."""
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "--broker", broker.url, "--cluster", cluster, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=paho_env(None),
        cwd=REPO,
    )
