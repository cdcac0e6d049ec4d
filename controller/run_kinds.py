"""``piclusterctl run stress|llama-bench|llama-rpc|dllama|distcc|template NAME`` (and ``run NAME`` for a template).

Parameters are ``--set key=value`` and go to the nodes as strings; each node checks them against the kind's or
template's declared types and refuses a bad one by name. ``run hpl`` is cluster_cli.py and fleet_cli.py. Every
job is kept in the history like ``run hpl``, with every node's telemetry during the run (``plot``); a job on each
node (stress, llama-bench, a template) may ``--detach``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from controller import jobs_cli, report
from controller.args import CLUSTER, HEAVY_KINDS, UsageError
from controller.dispatch import NOT_SENT, NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, subscriptions
from controller.recorder import Recorder
from controller.results import job_result
from controller.select import select
from controller.session import Session
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import JobSpec, Topics

if TYPE_CHECKING:
    from controller.distcc_plan import DistccPlan


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
    subs = (*subscriptions(topics, telemetry=False), topics.all_nodes("events"))  # the recorder adds the job's
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        fleet, online, offline, on_change = _selection(track.session, kind, args)
        recorder = Recorder(tuple(online))
        if kind in CLUSTER:
            return _cluster(track, fleet, kind, online, offline, params, args, on_change, recorder)
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
        runs = {}
        if online:
            track.session.subscribe(*recorder.topics(topics))
            tap = lambda msg: recorder.tap(topics, msg)  # noqa: E731
            runs = submit_and_follow(track.session, job, online, on_change=on_change, tap=tap)
    results = [*(runs[n] for n in online), *offline]
    passed = bool(results) and all(r.passed for r in results)
    summary = job_result(job.id, kind, "per-node", results, passed=passed, **recorder.figures())
    _print(track.finished(job.id, results, summary), results, bool(args.json))
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
    track: jobs_cli.Tracker,
    fleet: Fleet,
    kind: str,
    online: list[str],
    offline: list[NodeRun],
    params: dict[str, Any],
    args: argparse.Namespace,
    on_change: Callable[[NodeRun], None],
    recorder: Recorder,
) -> int:
    from controller.orchestrate import PlanError, RolePlan, role_plan, run_cluster

    if offline:
        raise PlanError(f"{kind} needs every selected node; offline: {', '.join(r.node for r in offline)}")
    if not online:
        raise PlanError(f"{kind}: no node selected")
    leader = args.leader or online[0]
    if leader not in online:
        raise PlanError(f"--leader {leader}: not one of the selected nodes ({', '.join(online)})")
    workers = [n for n in online if n != leader]
    distcc: DistccPlan | None = None
    if kind == "distcc":
        from controller.distcc_plan import plan_distcc

        distcc = plan_distcc(fleet.nodes, leader, workers, params)
        plan: RolePlan = distcc.roles()
        if not args.json:
            report.say(distcc_text(distcc), stderr=True)
    else:
        plan = role_plan(kind, params, len(online))
    job_id = new_job_id(kind)
    facts = jobs_cli.facts_of(fleet, online)
    shown = distcc.to_dict() if distcc else {}

    def record(job: JobSpec, nodes: list[str]) -> None:
        if job.id == job_id:  # the leader's job is the job; the workers' is stored beside it
            track.started(job, nodes, {"cluster": shown, "leader": leader, "workers": workers}, facts)
        else:
            track.history.job_started(job, track.topics.cluster, nodes, {}, facts)

    track.session.subscribe(*recorder.topics(track.topics))
    outcome = run_cluster(
        track.session,
        kind,
        leader,
        workers,
        plan,
        timeout_s=args.timeout,
        force=args.force,
        on_change=on_change,
        tap=lambda msg: recorder.tap(track.topics, msg),
        record=record,
        job_id=job_id,
    )
    runs = [outcome.leader, *outcome.workers.values()]
    figures: dict[str, Any] = {"leader": leader, **recorder.figures()}
    if distcc is not None:
        figures["plan"] = shown
        if outcome.leader.result:
            from controller.distcc_plan import shares

            ready = {w: r.ready for w, r in outcome.workers.items()}
            figures.update(shares(distcc, outcome.leader.result, ready))
    summary = job_result(outcome.job_id, kind, "cluster", runs, passed=outcome.passed, **figures)
    if outcome.leader.state == "not-started":
        summary["reason"] = outcome.leader.reason
    _print(track.finished(outcome.job_id, [outcome.leader], summary), runs, bool(args.json))
    return 0 if outcome.passed else 1


def distcc_text(plan: DistccPlan) -> str:
    workers = ", ".join(f"{w}:{plan.ports[w]}" for w in plan.workers) or "none"
    return (
        f"plan: make -j {plan.make_jobs} in {plan.dir} on {plan.leader} (CC=distcc {plan.cc}); distccd on {workers}; "
        f"compiles accepted from {', '.join(plan.allow)}"
    )


def _print(summary: dict[str, Any], runs: list[NodeRun], as_json: bool) -> None:
    if as_json:
        report.print_json(summary)
        return
    report.say(report.kind_results_table(summary["kind"], runs, summary))
    if build := report.build_line(summary):
        report.say(build)
