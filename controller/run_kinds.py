"""``piclusterctl run stress|llama-bench|llama-rpc|dllama|distcc|template NAME`` (and ``run NAME`` for a template).

Parameters are ``--set key=value`` and go to the nodes as strings; each node checks them against the kind's or
template's declared types and refuses a bad one by name. ``run hpl`` is cluster_cli.py and fleet_cli.py. Every
job is kept in the history with every node's telemetry during the run (``plot``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

from controller import jobs_cli, power, report
from controller.args import HEAVY_KINDS
from controller.dispatch import NodeRun, new_job_id, submit_and_follow
from controller.distcc_plan import DistccPlan, plan_distcc, shares
from controller.fleet import Fleet, subscriptions
from controller.orchestrate import ROLES, PlanError, RolePlan, role_plan, run_cluster
from controller.recorder import Recorder
from controller.results import job_result
from controller.select import select
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import JobSpec, Topics

CLUSTER_KINDS = (*ROLES, "distcc")


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
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        fleet = Fleet(topics).feed(track.session.snapshot())
        selected = select(args.nodes, fleet.nodes)
        online = [n for n in selected if fleet.nodes[n].online]
        offline = [NodeRun(n, state="offline", reason="the node is offline") for n in selected if n not in online]
        err = report.console(stderr=True)
        on_change = (lambda run: None) if args.json else (lambda run: err.print(report.run_line(run)))
        over_budget = power.budget_refusals(fleet, online) if kind in HEAVY_KINDS else []
        if over_budget and not args.force:
            raise PlanError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
        recorder = Recorder(tuple(online))
        if kind in CLUSTER_KINDS:
            return _cluster(track, fleet, kind, online, offline, params, args, on_change, recorder)
        job = JobSpec(
            id=new_job_id(kind),
            kind=kind,
            params=dict(params),
            timeout_s=args.timeout,
            force=args.force,
            queue=args.queue,
        )
        track.started(job, online, {}, jobs_cli.facts_of(fleet, online))
        if not args.json:
            err.print(
                f"job {job.id}: {kind} on {len(online)} node(s)" + (f", {len(offline)} offline" if offline else "")
            )
        runs = {}
        if online:
            tap = lambda msg: recorder.tap(topics, msg)  # noqa: E731
            runs = submit_and_follow(track.session, job, online, on_change=on_change, tap=tap)
    results = [*(runs[n] for n in online), *offline]
    passed = bool(results) and all(r.passed for r in results)
    summary = job_result(job.id, kind, "per-node", results, passed=passed, **recorder.figures())
    _print(track.finished(job.id, results, summary), results, bool(args.json))
    return 0 if passed else 1


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
        distcc = plan_distcc(fleet.nodes, leader, workers, params)
        plan: RolePlan = distcc.roles()
        if not args.json:
            report.console(stderr=True).print(distcc_text(distcc))
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


FIGURES = {
    "stress": ("bogo_ops_per_s", "bogo ops/s"),
    "llama-bench": ("gen_tps", "tg t/s"),
    "llama-rpc": ("gen_tps", "tg t/s"),
    "dllama": ("gen_tps", "pred t/s"),
    "distcc": ("wall_s", "wall s"),
}


def _print(summary: dict[str, Any], runs: list[NodeRun], as_json: bool) -> None:
    if as_json:
        report.print_json(summary)
        return
    kind = summary["kind"]
    key, label = FIGURES.get(kind, ("returncode", "exit"))
    table = Table(box=None, pad_edge=False)
    second = ("COMPILED", "SHARE") if kind == "distcc" else ("PROMPT T/S",)
    for col in ("NODE", "RESULT", label.upper(), *second, "PEAK °C", "NOTE"):
        table.add_column(col)
    peaks = summary.get("temp_peak_by_node") or {}
    for run in runs:
        r = run.result or {}
        verdict = "PASSED" if run.passed else run.state.upper()
        note = run.reason or (run.ready.get("address", "") if run.ready else "")
        if kind == "distcc":
            extra = [
                _fmt((summary.get("compiles_by_node") or {}).get(run.node)),
                _pct((summary.get("shares") or {}).get(run.node)),
            ]
            if run.ready:  # a worker: it ends when the leader's build is done
                verdict = "SERVED" if run.state == "cancelled" else verdict
        else:
            extra = [_fmt(r.get("prompt_tps"))]
        table.add_row(run.node, verdict, _fmt(r.get(key)), *extra, _fmt(peaks.get(run.node)), note)
    out = report.console()
    out.print(table)
    if kind == "distcc" and summary.get("wall_s") is not None:
        out.print(
            f"build: {summary['wall_s']:.1f} s wall, {summary.get('compiles_total', 0)} files compiled with "
            f"make -j {summary.get('make_jobs')}" + (f", {summary['fallbacks']} fell back to the leader" if summary.get(
                "fallbacks") else "")
        )  # fmt: skip


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"
