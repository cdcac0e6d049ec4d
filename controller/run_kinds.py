"""``piclusterctl run stress|llama-bench|llama-rpc|dllama|template NAME`` (and ``run NAME`` for a template).

Parameters are ``--set key=value`` and go to the nodes as strings; each node checks them against the kind's or
template's declared types and refuses a bad one by name. ``run hpl`` stays in cli.py (it plans per node).
A job on each node (stress, llama-bench, a template) is kept in the history like ``run hpl`` and may ``--detach``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from controller import jobs_cli, report
from controller.args import CLUSTER, HEAVY_KINDS, UsageError
from controller.dispatch import NOT_SENT, NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, subscriptions
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
    if kind in CLUSTER:
        with Session(broker, topics.cluster, subscriptions=subs) as session:
            _, online, offline, on_change = _selection(session, kind, args)
            return _cluster(session, kind, online, offline, params, args, on_change)
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        fleet, online, offline, on_change = _selection(track.session, kind, args)
        job = JobSpec(
            id=new_job_id(kind),
            kind=kind,
            params=dict(params),
            timeout_s=args.timeout,
            force=args.force,
            queue=args.queue,
        )
        track.started(job, online, {}, jobs_cli.facts_of(fleet, online), offline)
        if online and args.detach:
            return track.detach(job, online, bool(args.json))
        if not args.json:
            gone = f", {len(offline)} offline" if offline else ""
            report.say(f"job {job.id}: {kind} on {len(online)} node(s){gone}", stderr=True)
        runs = submit_and_follow(track.session, job, online, on_change=on_change) if online else {}
    results = [*(runs[n] for n in online), *offline]
    passed = bool(results) and all(r.passed for r in results)
    track.finished(job.id, results, job_result(job.id, kind, "per-node", results, passed=passed))
    _print(job.id, kind, results, passed, bool(args.json))
    return 0 if passed else 1


def _selection(
    session: Session, kind: str, args: argparse.Namespace
) -> tuple[Fleet, list[str], list[NodeRun], Callable[[NodeRun], None]]:
    """The fleet, the selected nodes that are online, those that are not, and the line printer; checks the
    power budget."""
    fleet = Fleet(session.topics).feed(session.snapshot())
    selected = select(args.nodes, fleet.nodes)
    online = [n for n in selected if fleet.nodes[n].online]
    offline = [NodeRun(n, state="offline", reason=NOT_SENT) for n in selected if n not in online]
    on_change = (lambda run: None) if args.json else (lambda run: report.say(report.run_line(run), stderr=True))
    if kind not in HEAVY_KINDS:  # templates are judged by the node, which knows whether its template is heavy
        return fleet, online, offline, on_change
    from controller import power

    over_budget = power.budget_refusals(fleet, online)
    if over_budget and not args.force:
        raise UsageError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
    return fleet, online, offline, on_change


def _cluster(
    session: Session,
    kind: str,
    online: list[str],
    offline: list[NodeRun],
    params: dict[str, Any],
    args: argparse.Namespace,
    on_change: Callable[[NodeRun], None],
) -> int:
    from controller.orchestrate import PlanError, run_cluster

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


def _print(job_id: str, kind: str, runs: list[NodeRun], passed: bool, as_json: bool) -> None:
    if as_json:
        report.print_json(job_result(job_id, kind, "cluster" if kind in CLUSTER else "per-node", runs, passed=passed))
        return
    report.say(report.kind_results_table(kind, runs))
