"""`make demo`: a broker and four simulated nodes on this machine, HPL on all of them, then everything stops.

Every process started here is stopped by its PID on the way out, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = ("node1", "node2", "node3", "node4")
CLUSTER = "demo"


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
            time.sleep(0.02)
    raise SystemExit(f"demo: mosquitto did not start listening on port {port}")


def wait_online(ctl: list[str], count: int, timeout_s: float = 30.0) -> None:
    """Until `piclusterctl nodes` shows every agent online with its facts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([*ctl, "nodes", "--json"], capture_output=True, text=True, check=False).stdout
        nodes = json.loads(out or "[]")
        if sum(1 for n in nodes if n["status"] == "online" and n["cores"]) >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: the agents did not come online within {timeout_s:g} s; their logs are kept")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    if shutil.which("mosquitto") is None:
        print("demo: mosquitto is missing; run `make setup` as root or `sudo apt install mosquitto`", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="picluster-demo-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                ["mosquitto", "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        wait_port(port)
        print(f"demo: broker {url}; starting {len(NODES)} simulated nodes (logs in {work})")
        for node in NODES:
            state = work / node
            state.mkdir()
            with open(state / "agent.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "nodeagent",
                            "run",
                            "--sim",
                            "--node-id",
                            node,
                            "--broker",
                            url,
                            "--cluster",
                            CLUSTER,
                            "--state-dir",
                            str(state),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        ctl = [sys.executable, "-m", "controller.cli", "--broker", url, "--cluster", CLUSTER]
        wait_online(ctl, len(NODES))
        subprocess.run([*ctl, "nodes"], check=False)
        print()
        result = subprocess.run([*ctl, "run", "hpl", "--nodes", "all"], check=False)
        print()
        subprocess.run([*ctl, "nodes"], check=False)
        return result.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(procs):
            stop(proc)
        if os.environ.get("PICLUSTER_KEEP_DEMO") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
