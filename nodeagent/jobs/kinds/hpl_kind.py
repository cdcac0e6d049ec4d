"""The ``hpl`` job kind: HPL through Debian's hpcc (default) or a plain xhpl, under mpirun on this node."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nodeagent.errors import JobFailed, JobRejected, echo
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.kinds.hpl import check_matches, hpcc_progress, parse_hpcc_output, parse_xhpl_output, render_input
from nodeagent.jobs.params import ParamSpec, coerce, refuse_undeclared
from nodeagent.protocol.jobs import HplParams, check_ranks
from nodeagent.protocol.messages import Scalar

HPCC_OUT = "hpccoutf.txt"


def _int_param(params: Mapping[str, Scalar], key: str) -> int:
    if key not in params:
        raise JobRejected(
            f"missing HPL parameter {key!r} (piclusterctl computes n, nb, p and q from the node's "
            "facts; other clients must send them)",
            f"params.{key}",
        )
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobRejected(f"HPL parameter {key!r} must be a whole number, got {echo(value)}", f"params.{key}")
    return value


def params_from(params: Mapping[str, Scalar]) -> HplParams:
    """The validated N/NB/P/Q of a job request."""
    hpl = HplParams(*(_int_param(params, k) for k in ("n", "nb", "p", "q")))
    hpl.validate()
    return hpl


# Every parameter a single-node hpl job takes; anything else is refused (a typo must not run another job).
SINGLE_PARAMS = ("n", "nb", "p", "q", "oversubscribe")
_OVERSUBSCRIBE = ParamSpec("bool", False)


def oversubscribe(params: Mapping[str, Scalar]) -> bool:
    """The request's ``oversubscribe`` (true, false, or a word such as "yes"); JobRejected when it is neither."""
    try:
        return bool(coerce(_OVERSUBSCRIBE, params.get("oversubscribe", False), "oversubscribe"))
    except ValueError as exc:
        raise JobRejected(f"hpl parameter 'oversubscribe': {exc}", "params.oversubscribe") from None


class HplKind:
    """Single-node HPL. The input file is written for exactly the asked sizes, and the result is checked
    against them, because hpcc silently falls back to its own defaults when it dislikes its input."""

    name = "hpl"

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        refuse_undeclared(params, SINGLE_PARAMS, "hpl")
        hpl = params_from(params)
        check_ranks(
            p=hpl.p,
            q=hpl.q,
            nodes=1,
            ranks_per_node=hpl.ranks,
            cores=ctx.cores,
            oversubscribe=oversubscribe(params),
            max_ranks_per_core=ctx.cfg.max_ranks_per_core,
        )
        use_xhpl = bool(ctx.cfg.xhpl)
        text = render_input(hpl)
        (ctx.work_dir / ("HPL.dat" if use_xhpl else "hpccinf.txt")).write_text(text)
        argv = [ctx.cfg.mpirun, *ctx.cfg.mpirun_args]
        if hpl.ranks > (os.cpu_count() or 1):
            argv.append("--oversubscribe")  # more ranks than this machine has cores (simulated nodes share one)
        argv += ["-np", str(hpl.ranks), "-x", "OPENBLAS_NUM_THREADS", ctx.cfg.xhpl or ctx.cfg.hpcc]
        env = {"OPENBLAS_NUM_THREADS": "1"}  # one BLAS thread per MPI rank, or ranks fight over cores
        plan = {
            "n": hpl.n,
            "nb": hpl.nb,
            "p": hpl.p,
            "q": hpl.q,
            "ranks": hpl.ranks,
            "binary": "xhpl" if use_xhpl else "hpcc",
        }
        return Prepared(argv=tuple(argv), requires=(ctx.cfg.xhpl or ctx.cfg.hpcc,), env=env, plan=plan)

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        if ctx.cfg.xhpl:
            return None
        try:
            text = ctx.read(HPCC_OUT)
        except OSError:  # a link or FIFO the job planted: no progress now; the result says what is wrong
            return None
        if not text:
            return None
        done, total, name = hpcc_progress(text)
        return Progress(done / total if total else None, name)

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        if returncode != 0:
            raise JobFailed(f"mpirun exited with status {returncode}: {_last_words(output)}")
        asked = HplParams(*(int(prepared.plan[k]) for k in ("n", "nb", "p", "q")))
        result = parse_xhpl_output(output) if ctx.cfg.xhpl else parse_hpcc_output(_read(ctx, HPCC_OUT))
        check_matches(asked, result, "xhpl" if ctx.cfg.xhpl else "hpcc")
        return result.to_dict()


def _last_words(output: str) -> str:
    """The last block of text in the output: Open MPI frames each message between lines of dashes."""
    block: list[str] = []
    last: list[str] = []
    for line in output.splitlines():
        if any(c.isalnum() for c in line):
            block.append(line.strip())
        elif block:
            last, block = block, []
    return " ".join(block or last)[:300] or "(no output)"


def _read(ctx: JobContext, name: str) -> str:
    """The job's own output file, never through a link it planted (JobContext.read)."""
    try:
        return ctx.read(name)
    except OSError as exc:
        raise JobFailed(f"cannot read {ctx.work_dir / name}: {exc.strerror}") from None
