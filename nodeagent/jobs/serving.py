"""What the cluster kinds share (``llama-rpc``, ``dllama``, ``distcc``): a ``role=worker`` job serves until it is
stopped and reports ``ready`` once its port listens; a worker that stops on its own is a failure; the other role's
result is the kind's own."""

from __future__ import annotations

from typing import Any

from nodeagent.errors import JobFailed
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.listening import listening_ports


def worker_ready(prepared: Prepared) -> dict[str, Any] | None:
    """The worker's address once its port (``plan["port"]``) listens, at ``plan["host"]``; None before."""
    port = int(prepared.plan["port"])
    if port not in listening_ports():
        return None
    return {"address": f"{prepared.plan['host']}:{port}", "port": port}


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return (lines[-1] if lines else "(no output)")[:300]


class WorkerRoles:
    """A cluster kind's two roles: ``role=worker`` serves (``worker_program``), the other leads (``lead_result``)."""

    name = ""
    worker_program = ""

    def ready(self, ctx: JobContext, prepared: Prepared) -> dict[str, Any] | None:
        return worker_ready(prepared) if prepared.plan.get("role") == "worker" else None

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        return None

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        if prepared.plan.get("role") == "worker":
            raise JobFailed(f"{self.worker_program} stopped on its own (status {returncode}): {last_line(output)}")
        return self.lead_result(ctx, prepared, output, returncode)

    def lead_result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        raise NotImplementedError
