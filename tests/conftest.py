"""Shared fixtures: a real Mosquitto on a free loopback port, and simulated agents as real processes.

Every process a fixture starts is stopped by its PID when the test ends, pass or fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# `make test` installs both paho majors here (pure Python, pip --target), so every agent test runs on both.
PAHO_DIRS = {"1.6": REPO / ".cache" / "paho1", "2.x": REPO / ".cache" / "paho2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


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
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


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
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

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

    def start(self, node: str, *, paho: str | None = None, config: str = "", extra: tuple[str, ...] = ()) -> AgentProc:
        state = self.tmp_path / node
        state.mkdir(exist_ok=True)
        conf = state / "agent.toml"
        conf.write_text("[agent]\ntick_s = 0.5\n[jobs]\nprogress_interval_s = 0.5\n" + config)
        log = state / "agent.log"
        argv = [
            sys.executable,
            "-m",
            "nodeagent",
            "run",
            "--sim",
            "--config",
            str(conf),
            "--node-id",
            node,
            "--broker",
            self.broker.url,
            "--cluster",
            self.cluster,
            "--state-dir",
            str(state),
            *extra,
        ]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=paho_env(paho), cwd=state)
        agent = AgentProc(node, proc, log)
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop()


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
