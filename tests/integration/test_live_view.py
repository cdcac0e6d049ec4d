"""``piclusterctl top`` and ``plot`` against real simulated agents on a real Mosquitto: ``top --once`` sees every node
and a running job's progress; ``plot`` draws what the history recorded of a real run."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from controller.history import History, default_path
from controller.plot import build_figure, fan_key
from nodeagent.protocol import Event, JobSpec
from tests.conftest import REPO, AgentFactory, Mosquitto, ctl, paho_env
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

STRESS = 'kinds = ["stress"]\n'
# Loopback only: other tests' network namespaces add and remove bridges on this host while MPI picks addresses.
LAUNCHER = f'[mpi]\nlaunch_agent = "{sys.executable} -m nodeagent.mpi.launcher"\nif_include = "127.0.0.0/8"\n'


def test_top_once_shows_every_node_and_a_running_jobs_progress(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("node1", paho="2.x", config=STRESS)
    agents.start("node2", paho="1.6", config=STRESS)
    agents.start("node3", config=STRESS)
    with Watcher(broker.url, cluster) as w:
        w.wait("three online", lambda: w.online("node1", "node2", "node3"))
        run = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "--broker", broker.url, "--cluster", cluster, "run", "stress",
             "--nodes", "node[1-2]", "--set", "duration_s=12", "--set", "workers=1", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=paho_env(None), cwd=REPO,
        )  # fmt: skip
        try:
            w.wait(
                "both nodes reporting progress in their telemetry",
                lambda: all(
                    (v := w.fleet.nodes[n]).telemetry is not None and (v.telemetry.job_progress or 0) > 0.1
                    for n in ("node1", "node2")
                ),
                timeout_s=20,
            )
            plain = ctl(broker, cluster, "top", "--once")
            doc = ctl(broker, cluster, "top", "--once", "--json")
            some = ctl(broker, cluster, "top", "--once", "--nodes", "node[2-4]")
        finally:
            out, err = run.communicate(timeout=60)
    assert plain.returncode == 0, plain.stderr
    rows = {line.split()[0]: line for line in plain.stdout.splitlines()[3:] if line.strip()}
    assert set(rows) == {"node1", "node2", "node3"}, plain.stdout  # off a terminal: a line per node
    for node in ("node1", "node2"):
        assert "stress-" in rows[node] and "stressing" in rows[node] and "%" in rows[node], rows[node]
        assert "°" in rows[node] and "W" in rows[node]
    assert rows["node3"].split()[1] == "online" and "stress-" not in rows["node3"]
    assert "3 nodes: 3 online" in plain.stdout
    nodes = {n["node"]: n for n in json.loads(doc.stdout)["nodes"]}
    assert set(nodes) == {"node1", "node2", "node3"}
    assert all(0 < nodes[n]["job_progress"] <= 1 and nodes[n]["job"].startswith("stress-") for n in ("node1", "node2"))
    assert nodes["node3"]["job"] is None and nodes["node1"]["temp_c"] > 0
    assert [line.split()[:2] for line in some.stdout.splitlines()[3:]][-1] == ["node4", "unknown"]  # never seen
    assert run.returncode == 0, out + err
    result = json.loads(out)
    assert set(result["telemetry"]) == {"node1", "node2"}  # per-node runs record telemetry too
    assert result["temp_peak_c"] is not None and set(result["throttled"]) == {"node1", "node2"}


def test_top_refuses_json_without_once(broker: Mosquitto, cluster: str) -> None:
    proc = ctl(broker, cluster, "top", "--json")
    assert proc.returncode == 2 and "--json goes with --once" in proc.stderr


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def test_plot_draws_what_a_cluster_hpl_run_recorded(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    agents.start("node1", config=LAUNCHER)
    agents.start("node2", paho="1.6", config=LAUNCHER)
    with Watcher(broker.url, cluster) as w:
        w.wait("both online", lambda: w.online("node1", "node2"))
    run = ctl(broker, cluster, "run", "hpl", "--nodes", "node[1-2]", "--json", "--param", "n=1600", "--param", "nb=96")
    assert run.returncode == 0, run.stdout + run.stderr
    job_id = json.loads(run.stdout)["job"]
    png = tmp_path / "run.png"
    proc = ctl(broker, cluster, "plot", job_id, "-o", str(png))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(png) in proc.stdout
    data = png.read_bytes()
    assert _png_size(data) == (1100, 900) and 20_000 < len(data) < 3_000_000

    history = History(default_path())  # the file the piclusterctl processes wrote (the suite's XDG_DATA_HOME)
    try:
        job = history.job(job_id)
    finally:
        history.close()
    assert job is not None
    recorded = job.result["telemetry"]
    assert set(recorded) == {"node1", "node2"} and all(len(rows) >= 2 for rows in recorded.values())
    fig = build_figure(job)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    t0 = min(r["t"] for rows in recorded.values() for r in rows)
    fan = fan_key(recorded)
    for node, rows in recorded.items():
        for key in ("temp_c", "freq_mhz", "power_w", fan):
            kept = [r for r in rows if r[key] is not None]
            line = lines[f"{key}:{node}"]
            assert list(line.get_xdata()) == pytest.approx([r["t"] - t0 for r in kept]), (key, node)
            assert list(line.get_ydata()) == pytest.approx([r[key] for r in kept]), (key, node)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "temperature (°C)",
        "CPU frequency (MHz)",
        "power (W)",
        "fan duty (%)" if fan == "fan_duty_pct" else "fan (rpm)",
    ]


def test_plot_says_why_when_a_job_has_no_telemetry_or_matplotlib_is_missing(
    broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite3"
    history = History(path)
    try:
        # A job known only from a node's events: no piclusterctl recorded its telemetry.
        history.record_event(Event(node="n1", seq=1, t=1.0, kind="started", job="stress-x-1"), cluster)
        job = JobSpec(id="stress-x-2", kind="stress")
        history.job_started(job, cluster, ["n1"], {})
        rows = [{"t": 1.0 + i, "temp_c": 50.0 + i, "freq_mhz": 2400.0, "power_w": 5.0, "fan_duty_pct": 40.0,
                 "fan_rpm": None, "freq_cap_mhz": None, "throttled": 0, "guard": "normal", "job": "stress-x-2"}
                for i in range(5)]  # fmt: skip
        history.set_result(job.id, {"telemetry": {"n1": rows}})
    finally:
        history.close()
    bare = ctl(broker, cluster, "plot", "stress-x-1", "--history", str(path), "-o", str(tmp_path / "a.png"))
    assert bare.returncode == 1 and "job stress-x-1 has no recorded telemetry" in bare.stderr
    assert not (tmp_path / "a.png").exists()
    missing = ctl(broker, cluster, "plot", "nope", "--history", str(path))
    assert missing.returncode == 2 and "'nope' is not in" in missing.stderr
    # Without matplotlib (blocked from importing) the error names the Debian package.
    code = (
        "import sys; sys.modules['matplotlib'] = None; from controller.cli import main; "
        f"sys.exit(main(['--broker', {broker.url!r}, '--cluster', {cluster!r}, 'plot', 'stress-x-2', "
        f"'--history', {str(path)!r}, '-o', {str(tmp_path / 'b.png')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=paho_env(None), cwd=REPO)
    assert proc.returncode == 1 and "apt install python3-matplotlib" in proc.stderr, proc.stderr
    ok = ctl(broker, cluster, "plot", "stress-x-2", "--history", str(path), "-o", str(tmp_path / "c.png"))
    assert ok.returncode == 0 and _png_size((tmp_path / "c.png").read_bytes()) == (1100, 900)
