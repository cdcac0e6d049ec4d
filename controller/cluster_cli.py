"""``piclusterctl run hpl --nodes NODESET`` (without ``--per-node``): one HPL over all the selected nodes.

Printing only; the plan is hpl_plan.plan_cluster, the run is cluster_run.ClusterRun.
"""

from __future__ import annotations

import argparse
from typing import Any

from controller import hpl_plan, jobs_cli, power, report
from controller.cluster_run import ClusterRun, cluster_job
from controller.dispatch import NodeRun, new_job_id
from controller.fleet import Fleet, subscriptions
from controller.results import job_result
from controller.select import select
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Topics


class PlanError(ValueError):
    """The selection cannot be planned (offline node, no facts): a usage error."""


def plan_for(fleet: Fleet, nodes: list[str], overrides: dict[str, Any]) -> hpl_plan.ClusterPlan:
    """The cluster plan for ``nodes`` (the first is the leader) from their facts."""
    sizes = []
    for name in nodes:
        view = fleet.nodes[name]
        if not view.online:
            raise PlanError(f"node {name} is offline; bring it back or leave it out of --nodes")
        if view.facts is None:
            raise PlanError(f"node {name} has published no facts yet; wait for its agent to connect")
        f = view.facts
        sizes.append(hpl_plan.NodeSize(name, f.cores, f.memory_mb, f.cpu, f.sim))
    return hpl_plan.plan_cluster(sizes, overrides)


def plan_text(plan: hpl_plan.ClusterPlan) -> str:
    return (
        f"plan: N={plan.n} NB={plan.nb} grid {plan.p} x {plan.q} = {plan.ranks} rank(s) over {len(plan.nodes)} "
        f"node(s) ({plan.ranks_per_node} per node); N from {plan.n_from}; leader {plan.leader} runs mpirun"
    )


def run(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    overrides = hpl_plan.parse_params(args.param)
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        fleet = Fleet(topics).feed(track.session.snapshot())
        nodes = select(args.nodes, fleet.nodes)
        plan = plan_for(fleet, nodes, overrides)
        over_budget = power.budget_refusals(fleet, list(plan.nodes))
        if over_budget and not args.force:
            raise PlanError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
        leader_facts = fleet.nodes[plan.leader].facts
        leader_key = leader_facts.key if leader_facts is not None else ""
        job = cluster_job(plan, new_job_id("hpl"), timeout_s=args.timeout, force=args.force, leader_key=leader_key)
        track.started(job, list(plan.nodes), plan.to_dict(), jobs_cli.facts_of(fleet, list(plan.nodes)))
        # The plan goes to stderr before the run, --json or not (stdout stays one JSON document).
        report.say(f"job {job.id}: one HPL over {len(plan.nodes)} node(s)", stderr=True)
        report.say(plan_text(plan), stderr=True)
        outcome = ClusterRun(track.session, plan, job, on_change=_line(bool(args.json)), detach=bool(args.detach)).run()
        if outcome.state == "detached":
            track.detached = True
            if args.json:
                runs = [outcome.runs[n] for n in plan.nodes]
                detached = job_result(job.id, "hpl", "cluster", runs, state="detached", leader=plan.leader)
                report.print_json({**detached, "detached": True})
            else:
                print(f"job {job.id} runs on; see it with: piclusterctl results {job.id}")
            return 0
    runs = [outcome.runs[n] for n in plan.nodes]
    r = track.finished(job.id, runs, job_result(job.id, "hpl", "cluster", runs, state=outcome.state, **outcome.result))
    if args.json:
        report.print_json(r)
    else:
        if outcome.passed:
            report.say(
                f"PASSED {r['gflops']:.3f} Gflops  N={r['n']} NB={r['nb']} {r['p']}x{r['q']}  {r['time_s']:.1f} s  "
                f"residual {r['residual']:.4g}  {len(r['nodes'])} node(s), {r['ranks']} rank(s)"
            )
        else:
            report.say(f"FAILED on {outcome.node or plan.leader}: {outcome.reason}")
        if "wall_power_avg_w" in r:
            report.say(f"wall: {r['wall_power_avg_w']:.1f} W average, {r.get('wall_gflops_per_w') or 0:.2f} Gflops/W")
        report.say(
            f"power avg {_w(r['power_avg_w'])} peak {_w(r['power_peak_w'])}  "
            f"Gflops/W {r['gflops_per_w'] if r['gflops_per_w'] is not None else '-'}  "
            f"peak {r['temp_peak_c'] if r['temp_peak_c'] is not None else '-'} °C  "
            f"throttled: {', '.join(n for n, t in r['throttled'].items() if t) or 'none'}"
        )
    return 0 if outcome.passed else 1


def _w(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} W"


def _line(quiet: bool) -> Any:
    def on_change(run: NodeRun) -> None:
        if not quiet and run.state not in ("progress",):
            report.say(report.run_line(run), stderr=True)

    return on_change
