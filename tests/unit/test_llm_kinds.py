"""llama-bench / llama-rpc / dllama: argv construction and refusals (pure: a model file in tmp, nothing runs),
the controller's split of parameters between roles, and the dllama node-count rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.args import rewrite
from controller.orchestrate import PlanError, check_nodes, leader_params, split_params
from nodeagent.config import JobsSection
from nodeagent.errors import JobRejected
from nodeagent.jobs.kind import JobContext
from nodeagent.jobs.kinds import KINDS, llm
from nodeagent.protocol import jobs
from nodeagent.protocol.jobs import dllama_nodes_problem


def ctx(tmp_path: Path, **cfg: Any) -> JobContext:
    return JobContext("j1", tmp_path, cores=4, sim=True, cfg=JobsSection(advertise_host="10.0.0.2", **cfg))


@pytest.fixture
def model(tmp_path: Path) -> str:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return str(path)


def test_llama_bench_argv(tmp_path: Path, model: str) -> None:
    p = KINDS["llama-bench"].prepare({"model": model, "n_gen": "64"}, ctx(tmp_path))
    assert p.argv == ("llama-bench", "-m", model, "-p", "512", "-n", "64", "-r", "3", "-t", "4", "-o", "json")
    assert p.stdout_name == "llama-bench.json" and p.heavy


def test_llama_rpc_worker_and_leader_argv(tmp_path: Path, model: str) -> None:
    worker = KINDS["llama-rpc"].prepare({"role": "worker", "threads": 2}, ctx(tmp_path))
    assert worker.argv == ("rpc-server", "--host", "0.0.0.0", "--port", "50052", "--threads", "2")
    assert worker.plan == {"role": "worker", "port": 50052, "host": "10.0.0.2"}
    leader = KINDS["llama-rpc"].prepare(
        {"role": "leader", "model": model, "rpc": "10.0.0.2:50052,10.0.0.3:50052"}, ctx(tmp_path, threads=3)
    )
    assert leader.argv[-4:] == ("-ngl", "99", "--rpc", "10.0.0.2:50052,10.0.0.3:50052")
    assert leader.argv[leader.argv.index("-t") + 1] == "3"


def test_llama_rpc_refuses_a_shell_in_the_worker_list(tmp_path: Path, model: str) -> None:
    with pytest.raises(JobRejected, match="parameter 'rpc': expected a value matching"):
        KINDS["llama-rpc"].prepare({"role": "leader", "model": model, "rpc": "a:1;reboot"}, ctx(tmp_path))


def test_models_must_exist_and_stay_under_model_dir(tmp_path: Path, model: str) -> None:
    with pytest.raises(JobRejected, match=r"model '/nope\.gguf' not found on this node"):
        KINDS["llama-bench"].prepare({"model": "/nope.gguf"}, ctx(tmp_path))
    with pytest.raises(JobRejected, match=r"is outside jobs\.model_dir"):
        KINDS["llama-bench"].prepare({"model": model}, ctx(tmp_path, model_dir=str(tmp_path / "models")))
    with pytest.raises(JobRejected, match="parameter 'model' is required"):
        KINDS["llama-bench"].prepare({}, ctx(tmp_path))


def test_dllama_worker_and_root_argv(tmp_path: Path, model: str) -> None:
    worker = KINDS["dllama"].prepare({"role": "worker"}, ctx(tmp_path))
    assert worker.argv == ("dllama", "worker", "--port", "9999", "--nthreads", "4")
    root = KINDS["dllama"].prepare(
        {"role": "root", "model": model, "tokenizer": model, "workers": "10.0.0.2:9999 10.0.0.3:9999,10.0.0.4:9999"},
        ctx(tmp_path),
    )
    assert root.argv[:2] == ("dllama", "inference")
    assert root.argv[-4:] == ("--workers", "10.0.0.2:9999", "10.0.0.3:9999", "10.0.0.4:9999")
    assert root.plan["nodes"] == 4


@pytest.mark.parametrize(
    ("workers", "kv", "message"),
    [
        ("a:1 b:1", 8, "a power of two), not 3; use 2"),
        ("a:1 b:1 c:1 d:1 e:1 f:1 g:1 h:1 i:1", 8, "not 10; use 8"),
        ("a:1 b:1 c:1", 2, "as many nodes as the model has KV heads (2), not 4"),
    ],
)
def test_dllama_root_refuses_node_counts_it_cannot_split(
    tmp_path: Path, model: str, workers: str, kv: int, message: str
) -> None:
    params = {"role": "root", "model": model, "tokenizer": model, "workers": workers, "kv_heads": kv}
    with pytest.raises(JobRejected, match=message.replace("(", r"\(").replace(")", r"\)")):
        KINDS["dllama"].prepare(params, ctx(tmp_path))


@given(st.integers(1, 4096), st.integers(1, 4096))
def test_dllama_node_rule(nodes: int, kv: int) -> None:
    problem = dllama_nodes_problem(nodes, kv)
    assert (problem is None) == ((nodes & (nodes - 1)) == 0 and nodes <= kv)


def test_roles_split_the_operators_parameters() -> None:
    worker, leader = split_params("llama-rpc", {"model": "/m.gguf", "port": "50100", "threads": "4"})
    assert worker == {"port": "50100", "threads": "4", "role": "worker"}
    assert leader == {"model": "/m.gguf", "threads": "4", "role": "leader"}
    assert leader_params("llama-rpc", leader, ["a:1", "b:2"])["rpc"] == "a:1,b:2"
    assert leader_params("dllama", {"role": "root"}, ["a:1", "b:2"])["workers"] == "a:1 b:2"
    with pytest.raises(PlanError, match="parameter 'rpc' is not one to set"):
        split_params("llama-rpc", {"rpc": "x:1"})
    with pytest.raises(PlanError, match="parameter 'modle' is not one to set"):
        split_params("dllama", {"modle": "x"})


def test_controller_refuses_dllama_node_counts_before_starting_anything() -> None:
    with pytest.raises(PlanError, match="not 3; use 2"):
        check_nodes("dllama", 3, {})
    with pytest.raises(PlanError, match=r"KV heads \(4\), not 8"):
        check_nodes("dllama", 8, {"kv_heads": "4"})
    check_nodes("dllama", 8, {})  # the root checks its own default
    check_nodes("llama-rpc", 3, {})


def test_run_name_means_run_template_name() -> None:
    assert rewrite(["run", "sysbench", "--nodes", "all"]) == ["run", "template", "sysbench", "--nodes", "all"]
    assert rewrite(["--broker", "mqtt://h", "--cluster", "run", "run", "x"]) == [
        "--broker", "mqtt://h", "--cluster", "run", "run", "template", "x"
    ]  # fmt: skip
    assert rewrite(["run", "stress", "--nodes", "n1"]) == ["run", "stress", "--nodes", "n1"]
    assert rewrite(["nodes"]) == ["nodes"]
    assert rewrite(["run", "--help"]) == ["run", "--help"]


def test_the_controller_splits_cluster_jobs_by_the_roles_the_kinds_declare() -> None:
    """piclusterctl splits --set values by protocol.jobs' key lists; they must be the kinds' own declarations."""
    assert set(llm.RPC_WORKER) == set(jobs.RPC_WORKER_KEYS)
    assert set(llm.RPC_LEADER) == set(jobs.RPC_LEADER_KEYS)
    assert set(llm.DLLAMA_WORKER) == set(jobs.DLLAMA_WORKER_KEYS)
    assert set(llm.DLLAMA_ROOT) == set(jobs.DLLAMA_ROOT_KEYS)
    assert set(llm.BENCH_PARAMS) == set(jobs.BENCH_KEYS)
