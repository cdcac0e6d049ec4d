"""``piclusterctl``: argument parsing, printing and exit codes only; the work is in fleet, select and dispatch.

Exit codes: 0 success (every node passed), 1 a node failed or the broker is unreachable, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn

from controller import cluster_cli, hpl_plan, jobs_cli, ops, power, report, run_kinds
from controller.dispatch import NodeRun, new_job_id, submit_and_follow
from controller.fleet import Fleet, NodeView, subscriptions
from controller.forget import ForgetRefused, forget
from controller.history import HistoryError
from controller.select import SelectionError, select
from controller.session import BrokerUnreachable, Session
from nodeagent import __version__
from nodeagent.config import Broker
from nodeagent.link import ENV_CA_FILE, ENV_PASSWORD_FILE, ENV_USERNAME, Credentials
from nodeagent.protocol import JobSpec, Topics
from nodeagent.protocol.messages import fan_mode
from nodeagent.protocol.topics import ProtocolError

DEFAULT_BROKER = "mqtt://localhost:1883"


class UsageError(Exception):
    """Bad arguments: exit 2 with one line."""


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Global options, accepted before or after the subcommand."""
    parser.add_argument(
        "--broker", metavar="URL", default=default, help=f"broker (default: PICLUSTER_BROKER or {DEFAULT_BROKER})"
    )
    parser.add_argument(
        "--cluster", metavar="NAME", default=default, help="cluster name (default: PICLUSTER_CLUSTER or 'default')"
    )
    parser.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    login = "the operator's MQTT login, when the broker wants one"
    parser.add_argument("--mqtt-user", metavar="NAME", default=default, help=f"{login} (or {ENV_USERNAME})")
    parser.add_argument(
        "--mqtt-password-file", metavar="FILE", default=default, help=f"its password (or {ENV_PASSWORD_FILE})"
    )
    parser.add_argument(
        "--mqtt-ca-file", metavar="FILE", default=default, help=f"CA for an mqtts:// broker (or {ENV_CA_FILE})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piclusterctl", description="Operate a picluster fleet over MQTT.")
    parser.add_argument("--version", action="version", version=f"piclusterctl {__version__}")
    _common(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)
    nodes = sub.add_parser("nodes", help="list every node seen, with its latest telemetry")
    _common(nodes, argparse.SUPPRESS)
    run = sub.add_parser("run", help="run a job on a set of nodes")
    run_sub = run.add_subparsers(dest="kind", required=True)
    hpl = run_sub.add_parser("hpl", help="HPL (Linpack): one run over all selected nodes (--per-node: one each)")
    _common(hpl, argparse.SUPPRESS)
    hpl.add_argument("--nodes", required=True, metavar="NODESET", help="all, node[1-4], node1,node3 ...")
    hpl.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override the plan; keys: {', '.join(hpl_plan.PARAM_KEYS)}",
    )
    hpl.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="seconds per node (default 3600)")
    hpl.add_argument("--force", action="store_true", help="run even where a node's health gate refuses")
    jobs_cli.add_run_options(hpl)
    run_kinds.add_parsers(run_sub, _common)
    hpl.add_argument("--per-node", action="store_true", help="a separate HPL on each node instead of one over all")
    fan = sub.add_parser("fan", help="set the fan of a set of nodes: auto (the curve) or a fixed percent")
    fan.add_argument("nodes", metavar="NODESET")
    fan.add_argument("mode", metavar="auto|PERCENT")
    identify = sub.add_parser("identify", help="light a node's LEDs (where it has them) and log a line on it")
    identify.add_argument("nodes", metavar="NODESET")
    policy = sub.add_parser("policy", help="effective thresholds and the thermal guard's state of each node")
    policy.add_argument("nodes", metavar="NODESET")
    pwr = sub.add_parser("power", help="switch chassis slots (NanoCluster): on, off or cycle, through slot 1")
    pwr.add_argument("action", choices=("on", "off", "cycle"))
    pwr.add_argument("nodes", metavar="NODESET")
    pwr.add_argument("--force", action="store_true", help="off: hold the line 8 s (cut power) instead of asking")
    forget = sub.add_parser("forget", help="remove a decommissioned node from the broker and Home Assistant")
    forget.add_argument("node", metavar="NODE")
    forget.add_argument("--force", action="store_true", help="even when the node is online")
    forget.add_argument("--ha-prefix", default="homeassistant", metavar="PREFIX", help="HA discovery prefix")
    for cmd in (fan, identify, policy, pwr, forget):
        _common(cmd, argparse.SUPPRESS)
    jobs_cli.add_parsers(sub, _common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(run_kinds.rewrite(sys.argv[1:] if argv is None else argv))
    try:
        _login_from_options(args)
        broker = Broker.parse(args.broker or os.environ.get("PICLUSTER_BROKER") or DEFAULT_BROKER)
        topics = Topics(args.cluster or os.environ.get("PICLUSTER_CLUSTER") or "default")
        if args.command == "nodes":
            return cmd_nodes(broker, topics, as_json=bool(args.json))
        if args.command in ("fan", "identify", "policy"):
            return cmd_ops(broker, topics, args)
        if args.command == "forget":
            return cmd_forget(broker, topics, args)
        if args.command == "power":
            return cmd_power(broker, topics, args)
        if args.command in jobs_cli.COMMANDS:
            return jobs_cli.main(args, broker, topics)
        if args.kind != "hpl":
            return run_kinds.cmd_run(broker, topics, args)
        if not args.per_node:
            if args.timeout <= 0:
                raise UsageError("--timeout: expected a number of seconds above 0")
            return cluster_cli.run(broker, topics, args)
        return cmd_run_hpl(broker, topics, args)
    except (UsageError, SelectionError, ProtocolError, ValueError) as exc:
        print(f"piclusterctl: {exc}", file=sys.stderr)
        return 2
    except (BrokerUnreachable, HistoryError) as exc:
        print(f"piclusterctl: {exc}", file=sys.stderr)
        return 1


def _login_from_options(args: argparse.Namespace) -> None:
    """The --mqtt-* options override the environment every session reads its login from; an unreadable
    password file is a usage error now rather than a refused connection later."""
    for value, key in (
        (args.mqtt_user, ENV_USERNAME),
        (args.mqtt_password_file, ENV_PASSWORD_FILE),
        (args.mqtt_ca_file, ENV_CA_FILE),
    ):
        if value:
            os.environ[key] = value
    Credentials.from_env(os.environ)


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
        report.console().print(report.nodes_table(fleet.sorted(), now))
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
    subs = (*subscriptions(topics), topics.all_nodes("events"))
    with jobs_cli.Tracker(args, broker, topics, subs) as track:
        session = track.session
        fleet = snapshot(broker, topics, session)
        selected = select(args.nodes, fleet.nodes)
        online = [n for n in selected if fleet.nodes[n].online]
        plans = plan_hpl([fleet.nodes[n] for n in online], overrides)
        over_budget = power.budget_refusals(fleet, online)
        if over_budget and not args.force:
            raise UsageError("power budget: " + "; ".join(over_budget) + " (select fewer nodes, or --force)")
        offline = [NodeRun(n, state="offline", reason="the node is offline") for n in selected if n not in online]
        job = JobSpec(id=new_job_id("hpl"), kind="hpl", node_params=plans, timeout_s=args.timeout, force=args.force)
        track.started(job, online, plans, jobs_cli.facts_of(fleet, online))
        if online and args.detach:
            return track.detach(job, online, bool(args.json))
        err = report.console(stderr=True)
        if not args.json:
            err.print(f"job {job.id}: HPL on {len(online)} node(s)" + (f", {len(offline)} offline" if offline else ""))
        runs: dict[str, NodeRun] = {}
        if online:
            with _progress(args.json) as progress:
                runs = submit_and_follow(session, job, online, on_change=_show(progress, err, online))
    results = [*(runs[n] for n in online), *offline]
    summary = {
        "job": job.id,
        "kind": "hpl",
        "passed": all(r.passed for r in results),
        "nodes": [r.to_dict() for r in results],
        "total_gflops": sum(r.result.get("gflops", 0.0) for r in results if r.passed and r.result),
    }
    summary = track.finished(job.id, results, summary)
    if args.json:
        report.print_json(summary)
    else:
        table, total = report.hpl_results_table(results)
        out = report.console()
        out.print(table)
        out.print(f"total: {total:.2f} Gflops from {sum(r.passed for r in results)}/{len(results)} node(s) passed")
        if "wall_power_avg_w" in summary:
            per_w = summary.get("wall_gflops_per_w", 0.0)
            out.print(f"wall: {summary['wall_power_avg_w']:.1f} W average, {per_w:.2f} Gflops/W")
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
        ops.send(session, args.command, online, getattr(args, "mode", ""))
        silent = (
            ops.confirm_fan(session, online, args.mode)
            if args.command == "fan"
            else ops.confirm_identify(session, online)
        )
    missing = sorted(set(nodes) - set(online)) + silent
    for node in online:
        if node not in silent:
            print(f"{node}: {args.command} {getattr(args, 'mode', '')}".rstrip() + ": done")
    for node in missing:
        print(f"{node}: {'offline' if node not in online else 'no confirmation'}", file=sys.stderr)
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


def _show(progress: Progress | None, err: Any, nodes: list[str]) -> Any:
    """A change handler: a live bar per node on a terminal, one line per change otherwise."""
    tasks = {n: progress.add_task(n, total=1.0) for n in nodes} if progress else {}

    def on_change(run: NodeRun) -> None:
        if progress is None:
            err.print(report.run_line(run))
            return
        progress.update(
            tasks[run.node], completed=run.progress or 0.0, description=f"{run.node} {run.state} {run.phase}".strip()
        )
        if run.ended:
            progress.console.print(report.run_line(run))

    return on_change


if __name__ == "__main__":
    sys.exit(main())
