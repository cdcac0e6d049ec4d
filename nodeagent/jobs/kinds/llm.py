"""LLM inference benchmarks: ``llama-bench`` on one node, ``llama-rpc`` (llama.cpp RPC across nodes) and
``dllama`` (distributed-llama) — the last two as a worker role and a leader role that the controller starts in
that order (workers first, each says ``ready`` with its address; then the leader with their addresses).

Commands as beowulf-ai-cluster runs them (docs/operations.md): ``rpc-server --host H --port 50052 --threads N`` on
workers and ``llama-bench ... -ngl 99 --rpc ip:50052,...`` on the leader; ``dllama worker --port 9999 --nthreads
N`` on workers and ``dllama inference --model M --tokenizer T --buffer-float-type q80 ... --workers ip:9999 ...``
on the root.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from nodeagent.errors import JobFailed, JobRejected, echo
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.kinds.dllama_parse import parse_dllama
from nodeagent.jobs.kinds.llama_parse import parse_llama_bench
from nodeagent.jobs.params import ParamSpec, Value, resolve
from nodeagent.jobs.serving import WorkerRoles, last_line
from nodeagent.protocol.jobs import dllama_nodes_problem
from nodeagent.protocol.messages import Scalar

ADDRESS = r"[A-Za-z0-9_.\[\]:-]{1,255}:\d{1,5}"
LLAMA_HINT = "scripts/build-llama.sh builds llama-bench and rpc-server from PyPI's llama-cpp-python sdist"
DLLAMA_HINT = "build distributed-llama (make dllama) and set jobs.dllama"
BENCH_JSON = "llama-bench.json"

THREADS = ParamSpec("int", 0, min=0, max=1024, help="threads; 0: jobs.threads or the node's cores")
BENCH_PARAMS = {
    "model": ParamSpec("str", None, help="GGUF model file on the node"),
    "n_prompt": ParamSpec("int", 512, min=0, max=65536, help="prompt tokens (pp test); 0: none"),
    "n_gen": ParamSpec("int", 128, min=0, max=65536, help="generated tokens (tg test); 0: none"),
    "repetitions": ParamSpec("int", 3, min=1, max=100, help="runs of each test"),
    "threads": THREADS,
}
RPC_WORKER = {
    "role": ParamSpec("choice", None, choices=("worker", "leader")),
    "port": ParamSpec("int", 0, min=0, max=65535, help="rpc-server port; 0: jobs.llama_rpc_port"),
    "threads": THREADS,
}
RPC_LEADER = {
    **BENCH_PARAMS,
    "role": RPC_WORKER["role"],
    "rpc": ParamSpec("str", "", pattern=f"({ADDRESS}(,{ADDRESS})*)?", help="worker addresses, host:port,..."),
}
DLLAMA_WORKER = {
    "role": ParamSpec("choice", None, choices=("worker", "root")),
    "port": ParamSpec("int", 0, min=0, max=65535, help="worker port; 0: jobs.dllama_port"),
    "threads": THREADS,
}
DLLAMA_ROOT = {
    "role": DLLAMA_WORKER["role"],
    "model": ParamSpec("str", None, help="dllama model file (.m) on the root node"),
    "tokenizer": ParamSpec("str", None, help="dllama tokenizer file (.t) on the root node"),
    "prompt": ParamSpec("str", "Hello world"),
    "steps": ParamSpec("int", 64, min=1, max=65536),
    "max_seq_len": ParamSpec("int", 4096, min=1, max=1 << 20),
    "buffer_float_type": ParamSpec("choice", "q80", choices=("q80", "f32")),
    "workers": ParamSpec("str", "", pattern=f"({ADDRESS}([ ,]{ADDRESS})*)?", help="worker addresses"),
    "kv_heads": ParamSpec("int", 0, min=0, max=4096, help="the model's KV heads; 0: jobs.dllama_kv_heads"),
    "threads": THREADS,
}


def _threads(values: Mapping[str, Value], ctx: JobContext) -> int:
    return int(values["threads"]) or ctx.cfg.threads or ctx.cores


def _model(path: str, ctx: JobContext, field: str = "model") -> str:
    """A model file that exists on this node, under ``jobs.model_dir`` when that is set."""
    real = os.path.realpath(path)
    if ctx.cfg.model_dir:
        root = os.path.realpath(ctx.cfg.model_dir)
        if os.path.commonpath([root, real]) != root:
            where = f"outside jobs.model_dir ({ctx.cfg.model_dir})"
            raise JobRejected(f"{field} {echo(path)} is {where}", f"params.{field}")
    if not os.path.isfile(real):
        raise JobRejected(f"{field} {echo(path)} not found on this node; copy it there first", f"params.{field}")
    return real


def _bench_argv(values: Mapping[str, Value], ctx: JobContext) -> list[str]:
    return [
        ctx.cfg.llama_bench,
        "-m",
        _model(str(values["model"]), ctx),
        "-p",
        str(values["n_prompt"]),
        "-n",
        str(values["n_gen"]),
        "-r",
        str(values["repetitions"]),
        "-t",
        str(_threads(values, ctx)),
        "-o",
        "json",
    ]


def _bench_result(ctx: JobContext, output: str, returncode: int) -> dict[str, Any]:
    if returncode != 0:
        raise JobFailed(f"llama-bench exited with status {returncode}: {last_line(output)}")
    result = parse_llama_bench(ctx.machine_output or output)  # the runner read the file through its own descriptor
    return {"passed": True, **result.to_dict()}


class LlamaBenchKind:
    """llama-bench on this node: prompt (pp) and generation (tg) tokens per second."""

    name = "llama-bench"

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        values = resolve(BENCH_PARAMS, params, self.name)
        return Prepared(
            argv=tuple(_bench_argv(values, ctx)),
            plan={k: v for k, v in values.items() if k != "threads"} | {"threads": _threads(values, ctx)},
            stdout_name=BENCH_JSON,
            install_hint=LLAMA_HINT,
        )

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        return None

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        return _bench_result(ctx, output, returncode)


class LlamaRpcKind(WorkerRoles):
    """llama.cpp across nodes: ``role=worker`` serves rpc-server until stopped; ``role=leader`` runs llama-bench
    with ``--rpc`` and the workers' addresses."""

    name = "llama-rpc"
    worker_program = "rpc-server"

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        role = params.get("role")
        if role == "worker":
            values = resolve(RPC_WORKER, params, f"{self.name} worker")
            port = int(values["port"]) or ctx.cfg.llama_rpc_port
            argv = [ctx.cfg.rpc_server, "--host", ctx.cfg.llama_rpc_bind, "--port", str(port)]
            argv += ["--threads", str(_threads(values, ctx))]
            plan = {"role": "worker", "port": port, "host": ctx.cfg.advertise_host or socket.gethostname()}
            return Prepared(argv=tuple(argv), plan=plan, install_hint=LLAMA_HINT)
        values = resolve(RPC_LEADER, params, f"{self.name} leader")
        if values["role"] != "leader":
            raise JobRejected(f"{self.name}: role must be worker or leader, got {echo(role)}", "params.role")
        argv = [*_bench_argv(values, ctx), "-ngl", "99"]  # offload every layer to the RPC devices
        if values["rpc"]:
            argv += ["--rpc", str(values["rpc"])]
        plan = {"role": "leader", "rpc": values["rpc"], "model": values["model"]}
        return Prepared(argv=tuple(argv), plan=plan, stdout_name=BENCH_JSON, install_hint=LLAMA_HINT)

    def lead_result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        return _bench_result(ctx, output, returncode)


class DllamaKind(WorkerRoles):
    """distributed-llama: ``role=worker`` serves ``dllama worker`` until stopped; ``role=root`` runs ``dllama
    inference`` with the workers and reports prompt (Evaluation) and generation (Prediction) tokens/s."""

    name = "dllama"
    worker_program = "dllama worker"

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        role = params.get("role")
        if role == "worker":
            values = resolve(DLLAMA_WORKER, params, f"{self.name} worker")
            port = int(values["port"]) or ctx.cfg.dllama_port
            argv = (ctx.cfg.dllama, "worker", "--port", str(port), "--nthreads", str(_threads(values, ctx)))
            plan = {"role": "worker", "port": port, "host": ctx.cfg.advertise_host or socket.gethostname()}
            return Prepared(argv=argv, plan=plan, install_hint=DLLAMA_HINT)
        values = resolve(DLLAMA_ROOT, params, f"{self.name} root")
        if values["role"] != "root":
            raise JobRejected(f"{self.name}: role must be worker or root, got {echo(role)}", "params.role")
        workers = str(values["workers"]).replace(",", " ").split()
        kv_heads = int(values["kv_heads"]) or ctx.cfg.dllama_kv_heads
        problem = dllama_nodes_problem(1 + len(workers), kv_heads)
        if problem:
            raise JobRejected(problem, "params.workers")
        argv = [
            ctx.cfg.dllama,
            "inference",
            "--model",
            _model(str(values["model"]), ctx),
            "--tokenizer",
            _model(str(values["tokenizer"]), ctx, "tokenizer"),
            "--buffer-float-type",
            str(values["buffer_float_type"]),
            "--prompt",
            str(values["prompt"]),
            "--steps",
            str(values["steps"]),
            "--max-seq-len",
            str(values["max_seq_len"]),
            "--nthreads",
            str(_threads(values, ctx)),
        ]
        if workers:
            argv += ["--workers", *workers]
        plan = {"role": "root", "nodes": 1 + len(workers), "workers": workers, "kv_heads": kv_heads}
        return Prepared(argv=tuple(argv), plan=plan, install_hint=DLLAMA_HINT)

    def lead_result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        if returncode != 0:
            raise JobFailed(f"dllama exited with status {returncode}: {last_line(output)}")
        return {"passed": True, **parse_dllama(output).to_dict(), "nodes": prepared.plan["nodes"]}
