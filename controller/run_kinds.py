"""``piclusterctl run stress|llama-bench|llama-rpc|dllama|template NAME`` (and ``run NAME`` for a template).

Parameters are ``--set key=value`` and go to the nodes as strings; each node checks them against the kind's or
template's declared types and refuses a bad one by name. ``run hpl`` stays in cli.py (it plans per node).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

from controller import power, report
from controller.args import HEAVY_KINDS
from controller.dispatch import NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, subscriptions
from controller.orchestrate import ROLES, PlanError, run_cluster
from controller.results import job_result
from controller.select import select
from controller.session import Session
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import JobSpec, Topics


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def cmd_run(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    kind = args.template if args.kind == "template" else args.kind
    params = parse_sets(args.set)
    if args.timeout <= 0:
        raise ValueError("--timeout: expected a number of seconds above 0")
    subs = (*subscriptions(topics, telemetry=False), topics.all_nodes("events"))
    with Session(broker, topics.cluster, subscriptions=subs) as session:
        fleet = Fleet(topics).feed(session.snapshot())
        selected = select(args.nodes, fleet.nodes)
        online = [n for n in selected if fleet.nodes[n].online]
        offline = [NodeRun(n, state="offline", reason="the node is offline") for n in selected if n not in online]
        err = report.console(stderr=True)
        on_change = (lambda run: None) if args.json else (lambda run: report.line(err, report.run_line(run)))
        over_budget = power.budget_refusals(fleet, online) if kind in HEAVY_KINDS else []
        if over_budget and not args.force:
            raise PlanError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
        if kind in ROLES:
            return _cluster(session, kind, online, offline, params, args, on_change)
        job = JobSpec(
            id=new_job_id(kind),
            kind=kind,
            params=dict(params),
            timeout_s=args.timeout,
            force=args.force,
            queue=args.queue,
        )
        if not args.json:
            err.print(
                f"job {job.id}: {kind} on {len(online)} node(s)" + (f", {len(offline)} offline" if offline else "")
            )
        runs = submit_and_follow(session, job, online, on_change=on_change) if online else {}
    results = [*(runs[n] for n in online), *offline]
    passed = bool(results) and all(r.passed for r in results)
    _print(job.id, kind, results, passed, bool(args.json))
    return 0 if passed else 1


def _cluster(
    session: Session,
    kind: str,
    online: list[str],
    offline: list[NodeRun],
    params: dict[str, Any],
    args: argparse.Namespace,
    on_change: Callable[[NodeRun], None],
) -> int:
    if offline:
        raise PlanError(f"{kind} needs every selected node; offline: {', '.join(r.node for r in offline)}")
    if not online:
        raise PlanError(f"{kind}: no node selected")
    leader = args.leader or online[0]
    if leader not in online:
        raise PlanError(f"--leader {leader}: not one of the selected nodes ({', '.join(online)})")
    workers = [n for n in online if n != leader]
    outcome = run_cluster(
        session, kind, leader, workers, params, timeout_s=args.timeout, force=args.force, on_change=on_change
    )
    _print(outcome.job_id, kind, [outcome.leader, *outcome.workers.values()], outcome.passed, bool(args.json))
    return 0 if outcome.passed else 1


FIGURES = {
    "stress": ("bogo_ops_per_s", "bogo ops/s"),
    "llama-bench": ("gen_tps", "tg t/s"),
    "llama-rpc": ("gen_tps", "tg t/s"),
    "dllama": ("gen_tps", "pred t/s"),
}


def _print(job_id: str, kind: str, runs: list[NodeRun], passed: bool, as_json: bool) -> None:
    if as_json:
        report.print_json(job_result(job_id, kind, "cluster" if kind in ROLES else "per-node", runs, passed=passed))
        return
    key, label = FIGURES.get(kind, ("returncode", "exit"))
    table = Table(box=None, pad_edge=False)
    for col in ("NODE", "RESULT", label.upper(), "PROMPT T/S", "NOTE"):
        table.add_column(col)
    for run in runs:
        r = run.result or {}
        verdict = "PASSED" if run.passed else run.state.upper()
        note = run.reason or (run.ready.get("address", "") if run.ready else "")
        prompt = r.get("prompt_tps")
        table.add_row(run.node, verdict, _fmt(r.get(key)), _fmt(prompt), note)
    report.print_table(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
