"""Fixtures for the packaging tests: a fake systemd notify socket that records what the agent tells systemd."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Mosquitto
from tests.waits import wait_until

REPO = Path(__file__).resolve().parents[2]


def installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return out.stdout.endswith("install ok installed")


def ensure_apt(*packages: str) -> None:
    """Install the Debian packages a test needs (as root), or skip it with the command to run (not root)."""
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"needs root to install {' '.join(missing)} (or: sudo apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


@dataclass
class Datagram:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """What systemd's manager would hear: an AF_UNIX datagram socket bound at ``address`` ($NOTIFY_SOCKET)."""

    address: str
    sock: socket.socket
    received: list[Datagram] = field(default_factory=list)

    def pump(self, timeout_s: float = 0.05) -> None:
        self.sock.settimeout(timeout_s)
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            lines = (line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append(Datagram(time.monotonic(), dict(lines)))
            self.sock.settimeout(0)

    def wait(self, what: str, cond: Callable[[], object], timeout_s: float = 20.0) -> object:
        return wait_until(what, self.pump, cond, timeout_s, detail=lambda: f"got {self.received}")

    def with_field(self, key: str, value: str | None = None) -> list[Datagram]:
        return [d for d in self.received if key in d.fields and (value is None or d.fields[key] == value)]


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """The shared Mosquitto, in a directory its own user can write: run as root, mosquitto drops to the
    ``mosquitto`` user, and its log (``mosquitto.log``, where the tests count CONNECTs) must still be written."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it (apt install mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="picluster-mosq-"))
    workdir.chmod(0o1777)
    mosq = Mosquitto(workdir)
    mosq.start()
    try:
        yield mosq
    finally:
        mosq.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _bound(kind: str) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmp = Path(tempfile.mkdtemp(prefix="sd-"))  # short: sun_path holds 108 bytes, pytest's tmp_path may not fit
    try:
        if kind == "path":
            address = str(tmp / "notify")
            sock.bind(address)
        else:
            address = f"@picluster-test-{tmp.name}"
            sock.bind("\0" + address[1:])
        yield NotifySocket(address, sock)
    finally:
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """A bound notify socket, once as a file path and once as an abstract name ('@…'), as systemd may use either."""
    yield from _bound(request.param)


@pytest.fixture
def notify_path(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """A bound notify socket at a file path (what systemd's manager uses: /run/systemd/notify)."""
    yield from _bound("path")
