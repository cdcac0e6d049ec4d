"""A ``[[jobs.template]]`` job: the operator's argv with checked parameters in place of its placeholders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodeagent.errors import JobFailed
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.params import resolve
from nodeagent.jobs.template_config import JobTemplate, fill
from nodeagent.protocol.messages import Scalar

TAIL_LINES = 20


class TemplateKind:
    """Runs one template. The result is the exit status and the last lines of output; a non-zero exit fails."""

    def __init__(self, template: JobTemplate) -> None:
        self.template = template
        self.name = template.name

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        values = resolve(self.template.params, params, f"template {self.name!r}")
        argv = tuple(fill(word, values) for word in self.template.argv)
        return Prepared(
            argv=argv,
            plan={"template": self.name, "params": dict(values)},
            heavy=self.template.heavy,
            diagnostic=self.template.diagnostic,
            timeout_s=self.template.timeout_s,
            install_hint=f"the program template {self.name!r} names",
        )

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        return None

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        tail = output.splitlines()[-TAIL_LINES:]
        if returncode != 0:
            last = " | ".join(line.strip() for line in tail[-3:] if line.strip()) or "(no output)"
            raise JobFailed(f"{prepared.argv[0]} exited with status {returncode}: {last[:300]}")
        return {"passed": True, "returncode": returncode, "output_tail": tail}
