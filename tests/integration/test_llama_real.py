"""llama.cpp for real: llama-bench on one node and llama-rpc across two (rpc-server worker first, then llama-bench
--rpc on the leader), run by real agents over a real broker on a tiny random-weight GGUF model.

The binaries come from scripts/build-llama.sh (llama.cpp as vendored by PyPI's llama-cpp-python sdist, CPU, with
RPC), cached outside the repository ($LLAMA_CACHE, default /var/cache/picluster-test/llama for root): the fixture
runs the script, which returns at once when the build is there and builds it otherwise (about 10 minutes on 2
cores). A failed build fails these tests loudly. tests/integration/test_fresh_machine.py checks that the build
works from an empty cache, so a cache left on the machine cannot be the only reason these pass.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nodeagent.jobs.listening import listening_ports
from scripts.localcluster import free_port
from tests.conftest import REPO, AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def llama() -> Path:
    """The build's cache directory (the script's last line of output), built first if needed."""
    proc = subprocess.run([str(REPO / "scripts" / "build-llama.sh")], capture_output=True, text=True, timeout=3 * 3600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-llama.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def config(llama: Path, kinds: str, **extra: object) -> str:
    lines = [
        f"kinds = [{kinds}]",
        f'llama_bench = "{llama / "bin" / "llama-bench"}"',
        f'rpc_server = "{llama / "bin" / "rpc-server"}"',
        "threads = 1",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


SMALL = ("--set", "n_prompt=32", "--set", "n_gen=8", "--set", "repetitions=1")


def test_llama_bench_on_one_node(agents: AgentFactory, broker: Mosquitto, cluster: str, llama: Path) -> None:
    agents.start("n1", config=config(llama, '"llama-bench"'))
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
    model = llama / "tiny.gguf"
    proc = ctl(broker, cluster, "run", "llama-bench", "--nodes", "n1", "--set", f"model={model}", *SMALL, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (node,) = json.loads(proc.stdout)["runs"]
    r = node["result"]
    assert r["prompt_tps"] > 0 and r["gen_tps"] > 0
    assert [(t["n_prompt"], t["n_gen"]) for t in r["tests"]] == [(32, 0), (0, 8)]
    assert r["tests"][0]["backend"] == "CPU"


def test_llama_rpc_starts_the_worker_then_the_leader_and_stops_the_worker(
    agents: AgentFactory, broker: Mosquitto, cluster: str, llama: Path
) -> None:
    port = free_port()
    agents.start("n1", config=config(llama, '"llama-rpc"'))
    agents.start(
        "n2",
        config=config(
            llama, '"llama-rpc"', llama_rpc_bind="127.0.0.1", llama_rpc_port=port, advertise_host="127.0.0.1"
        ),
    )
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1", "n2"))
    model = llama / "tiny.gguf"
    proc = ctl(broker, cluster, "run", "llama-rpc", "--nodes", "n[1-2]", "--set", f"model={model}", *SMALL, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    leader, worker = out["runs"]
    assert (leader["node"], worker["node"]) == ("n1", "n2")
    assert leader["plan"]["rpc"] == f"127.0.0.1:{port}"
    assert "RPC" in leader["result"]["tests"][0]["backend"]  # llama-bench really used the remote device
    assert leader["result"]["gen_tps"] > 0 and leader["result"]["prompt_tps"] > 0
    assert worker["state"] == "cancelled"  # stopped by the controller once the leader was done
    assert port not in listening_ports()


def test_dllama_count_is_refused_before_anything_starts(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    for n in ("n1", "n2", "n3"):
        agents.start(n, config='kinds = ["dllama"]\n')
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1", "n2", "n3"))
        proc = ctl(broker, cluster, "run", "dllama", "--nodes", "n[1-3]", "--set", "model=/m", "--set", "tokenizer=/t")
        assert proc.returncode == 2
        assert "distributed-llama runs on 1, 2, 4, 8 ... nodes (a power of two), not 3; use 2" in proc.stderr
        w.pump(0.5)
        assert w.events() == []  # no node was asked to do anything


def test_a_worker_that_cannot_start_means_no_leader_run(agents: AgentFactory, broker: Mosquitto, cluster: str) -> None:
    agents.start("n1", config='kinds = ["llama-rpc"]\n')
    agents.start("n2", config='kinds = ["llama-rpc"]\nrpc_server = "/nonexistent/rpc-server"\n')
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1", "n2"))
        proc = ctl(broker, cluster, "run", "llama-rpc", "--nodes", "n[1-2]", "--set", "model=/m.gguf", "--json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        leader, worker = json.loads(proc.stdout)["runs"]
        assert worker["state"] == "rejected" and "/nonexistent/rpc-server not found on this node" in worker["reason"]
        assert leader["state"] == "not-started" and leader["reason"].startswith("workers not ready: n2 rejected")
        w.pump(0.5)
        assert w.events("n1") == []  # the leader was never asked
