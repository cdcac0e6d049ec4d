"""A private broker and simulated agents on this machine: what `make demo`, the benchmarks and the tests share.

Everything started here is a plain process the caller stops by PID with ``stop()``.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

# Simulated nodes started by root on a developer's machine run their jobs as this user (jobs never run as root; an
# installed node has the "picluster" user its .deb creates). nobody exists on every Debian system.
SIM_JOBS_USER = "nobody"


def sim_jobs_config() -> str:
    """The ``[jobs]`` keys every simulated node started here gets: its jobs user."""
    return f'user = "{SIM_JOBS_USER}"\n'


def open_to_jobs(path: Path) -> None:
    """Let the jobs user reach ``path`` (its state directory): add search permission (never read or write) to it
    and every root-owned directory above it that lacks it, such as pytest's and mkdtemp's private 0700 ones."""
    if os.geteuid() != 0:
        return  # jobs run as this very user
    for parent in (path, *path.parents):
        st = parent.stat()
        if st.st_uid == 0 and parent != Path("/") and st.st_mode & 0o011 != 0o011:
            parent.chmod(stat.S_IMODE(st.st_mode) | 0o011)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 5.0) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_conf(port: int, log_file: Path | None = None) -> str:
    """A loopback-only, anonymous, in-memory broker. ``set_tcp_nodelay`` saves ~40 ms per small exchange."""
    log = f"log_dest file {log_file}\n" if log_file else ""
    return f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n{log}"


def start_mosquitto(workdir: Path, port: int, *, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Mosquitto on ``port`` with its config in ``workdir`` and wait until it listens."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, log_file))
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
    except TimeoutError:
        stop(proc)
        raise
    return proc


def agent_argv(
    node: str, broker_url: str, cluster: str, state_dir: Path, *extra: str, python: str = sys.executable
) -> list[str]:
    """The command line of one simulated agent."""
    return [
        python,
        "-m",
        "nodeagent",
        "run",
        "--sim",
        "--node-id",
        node,
        "--broker",
        broker_url,
        "--cluster",
        cluster,
        "--state-dir",
        str(state_dir),
        *extra,
    ]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
    """Signal ``proc`` (SIGTERM by default), wait, SIGKILL it if it does not end in ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
