"""The fleet subcommands of piclusterctl: ``nodes``, ``run hpl --per-node``, ``fan``, ``identify``, ``policy``,
``power`` and ``forget``. Printing and exit codes; the work is in fleet, select, dispatch, ops and power.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn

from controller import hpl_plan, jobs_cli, ops, power, report
from controller.args import UsageError
from controller.dispatch import NOT_SENT, NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, NodeView, subscriptions
from controller.forget import ForgetRefused, forget
from controller.recorder import Recorder
from controller.results import job_result
from controller.select import select
from controller.session import Session
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import JobSpec, Topics
from nodeagent.protocol.messages import fan_mode


def snapshot(broker: Broker, topics: Topics, session: Session | None = None) -> Fleet:
    """The fleet from retained messages, through an open session or a short one of its own."""
    if session is not None:
        return Fleet(topics).feed(session.snapshot())
    with Session(broker, topics.cluster, subscriptions=subscriptions(topics)) as own:
        return Fleet(topics).feed(own.snapshot())


def cmd_nodes(broker: Broker, topics: Topics, *, as_json: bool) -> int:
    fleet = snapshot(broker, topics)
    now = time.time()
    if as_json:
        report.print_json([v.to_dict(now) for v in fleet.sorted()])
    elif not fleet.nodes:
        print(f"no nodes have announced themselves in cluster {topics.cluster!r} on {broker}", file=sys.stderr)
    else:
        report.say(report.nodes_table(fleet.sorted(), now))
    return 0


def plan_hpl(views: list[NodeView], overrides: dict[str, Any]) -> dict[str, dict[str, int]]:
    """N, NB, P and Q for every node, from its own facts and the operator's overrides."""
    plans = {}
    for view in views:
        f = view.facts
        if f is None:
            raise UsageError(f"node {view.name} has published no facts yet; wait for its agent to connect")
        params = hpl_plan.plan_node(cores=f.cores, memory_mb=f.memory_mb, cpu=f.cpu, sim=f.sim, overrides=overrides)
        plans[view.name] = {"n": params.n, "nb": params.nb, "p": params.p, "q": params.q}
        if overrides.get("oversubscribe"):
            plans[view.name]["oversubscribe"] = True
    return plans


def cmd_run_hpl(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    overrides = hpl_plan.parse_params(args.param)
    if args.timeout <= 0:
        raise UsageError("--timeout: expected a number of seconds above 0")
    subs = (*subscriptions(topics, telemetry=False), topics.all_nodes("events"))
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        session = track.session
        fleet = snapshot(broker, topics, session)
        selected = select(args.nodes, fleet.nodes)
        online = [n for n in selected if fleet.nodes[n].online]
        plans = plan_hpl([fleet.nodes[n] for n in online], overrides)
        over_budget = power.budget_refusals(fleet, online)
        if over_budget and not args.force:
            raise UsageError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
        offline = [NodeRun(n, state="offline", reason=NOT_SENT) for n in selected if n not in online]
        job = JobSpec(id=new_job_id("hpl"), kind="hpl", node_params=plans, timeout_s=args.timeout, force=args.force)
        track.started(job, online, plans, jobs_cli.facts_of(fleet, online), offline)
        if online and args.detach:
            return track.detach(job, online, bool(args.json))
        if not args.json:
            gone = f", {len(offline)} offline" if offline else ""
            report.say(f"job {job.id}: HPL on {len(online)} node(s){gone}", stderr=True)
        runs: dict[str, NodeRun] = {}
        recorder = Recorder(tuple(online))  # every node's telemetry during the run, for the result and `plot`
        if online:
            session.subscribe(*recorder.topics(topics))
            with _progress(args.json) as progress:
                runs = submit_and_follow(
                    session, job, online, on_change=_show(progress, online), tap=lambda msg: recorder.tap(topics, msg)
                )
    results = [*(runs[n] for n in online), *offline]
    summary = job_result(job.id, "hpl", "per-node", results, **recorder.figures())
    summary = track.finished(job.id, results, summary)
    if args.json:
        report.print_json(summary)
    else:
        table, total = report.hpl_results_table(results)
        report.say(table)
        report.say(f"total: {total:.2f} Gflops from {sum(r.passed for r in results)}/{len(results)} node(s) passed")
        if "wall_power_avg_w" in summary:
            per_w = summary.get("wall_gflops_per_w", 0.0)
            report.say(f"wall: {summary['wall_power_avg_w']:.1f} W average, {per_w:.2f} Gflops/W")
    return 0 if results and all(r.passed for r in results) else 1


def cmd_ops(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    """fan, identify and policy: one publish for the selection, then the nodes' confirmation."""
    if args.command == "fan" and fan_mode(args.mode) is None:
        raise UsageError(f'fan: expected "auto" or a percent from 0 to 100, got {args.mode!r}')
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with Session(broker, topics.cluster, subscriptions=subs) as session:
        fleet = snapshot(broker, topics, session)
        nodes = select(args.nodes, fleet.nodes)
        if args.command == "policy":
            ops.print_policy(fleet, nodes, bool(args.json))
            return 0
        online = [n for n in nodes if fleet.nodes[n].online]
        cmd_id = ops.send(session, args.command, online, getattr(args, "mode", ""))
        silent = (
            ops.confirm_fan(session, online, args.mode, cmd_id)
            if args.command == "fan"
            else ops.confirm_identify(session, online, cmd_id)
        )
    missing = {**dict.fromkeys(sorted(set(nodes) - set(online)), "offline"), **silent}
    for node in online:
        if node not in silent:
            print(f"{node}: {args.command} {getattr(args, 'mode', '')}".rstrip() + ": done")
    for node, why in missing.items():
        print(f"{node}: {why}", file=sys.stderr)
    return 1 if missing else 0


def cmd_power(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    """power on|off|cycle: one command per node to the node that switches the slots, then its answers."""
    if args.force and args.action != "off":
        raise UsageError("power: --force only goes with off")
    action = "force-off" if args.force else args.action
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with Session(broker, topics.cluster, subscriptions=subs) as session:
        fleet = snapshot(broker, topics, session)
        nodes = select(args.nodes, fleet.nodes)
        try:
            to = power.switcher(fleet)
            slots = power.slots_of(fleet, nodes)
        except LookupError as exc:
            raise UsageError(f"power: {exc}") from None
        got = power.answers(session, to, power.send(session, to, action, slots), seconds_each=20.0)
    failed = 0
    for node, event in got.items():
        if event is not None and event.kind == "finished":
            print(f"{node}: power {action} (slot {slots[node]}): done")
            continue
        failed += 1
        why = f"{event.kind}: {event.reason}" if event is not None else f"no answer from {to}"
        print(f"{node}: power {action} (slot {slots[node]}): {why}", file=sys.stderr)
    return 1 if failed else 0


def cmd_forget(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    with Session(broker, topics.cluster, subscriptions=subscriptions(topics)) as session:
        try:
            done = forget(session, args.node, ha_prefix=args.ha_prefix, force=args.force)
        except ForgetRefused as exc:
            print(f"piclusterctl: {exc}", file=sys.stderr)
            return 1
    if args.json:
        report.print_json({"node": done.node, "was": done.was, "cleared": list(done.topics)})
    else:
        print(f"{done.node}: forgotten (was {done.was}); cleared {len(done.topics)} retained topics")
    return 0


def _progress(quiet: bool) -> AbstractContextManager[Progress | None]:
    if quiet or not sys.stderr.isatty():
        return nullcontext(None)
    return Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=report.console(stderr=True),
        transient=True,
    )


def _show(progress: Progress | None, nodes: list[str]) -> Any:
    """A change handler: a live bar per node on a terminal, one line per change otherwise."""
    tasks = {n: progress.add_task(n, total=1.0) for n in nodes} if progress else {}

    def on_change(run: NodeRun) -> None:
        if progress is None:
            report.say(report.run_line(run), stderr=True)
            return
        progress.update(
            tasks[run.node], completed=run.progress or 0.0, description=f"{run.node} {run.state} {run.phase}".strip()
        )
        if run.ended:
            progress.console.print(report.run_line(run), markup=False, highlight=False)

    return on_change
