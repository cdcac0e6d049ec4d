"""``piclusterctl jobs | results | report | cancel`` and what ``run`` needs to keep its jobs in the history.

Every command here first drains the operator's persistent MQTT session into the history (the events the broker
queued while no piclusterctl ran), then answers from the history. Without a broker they answer from the history
alone, with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from controller import report, results
from controller.dispatch import ACCEPT_TIMEOUT_S, NOT_SENT, Follower, NodeRun, cancel, follow_once, resend, submit
from controller.fleet import Fleet
from controller.history import TERMINAL, VERDICTS, History, JobRecord, default_path
from controller.results import job_result
from controller.select import SelectionError, expand, fold
from controller.session import BrokerUnreachable, Session, persistent_client_id
from controller.wallpower import WallMeter
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Event, JobSpec, Topics, decode

CANCEL_WAIT_S = 15.0  # the agent's kill grace is 5 s; a loaded node needs a little more
DRAIN_S = 5.0
RESEND_WAIT_S = 3.0  # how long results and jobs wait for nodes to say again what the history lacks
# A node not heard from for a job younger than this may not have its run command yet: it is not asked about it.
RESEND_AFTER_S = 2 * ACCEPT_TIMEOUT_S
SETTLE_S = 5.0  # the recorder trails the run's own session by a few ms; the broker keeps the rest for next time


class JobsUsageError(ValueError):
    """Bad arguments to a jobs command (exit 2)."""


def history_path(args: argparse.Namespace) -> Path:
    return Path(args.history) if getattr(args, "history", None) else default_path()


@contextlib.contextmanager
def _owner_lock(path: Path) -> Iterator[bool]:
    """True if this process may use the persistent session: two clients with one id would throw each other
    off the broker in turn, so a second concurrent piclusterctl takes a throw-away session instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def recording_session(args: argparse.Namespace, broker: Broker, topics: Topics, history: History) -> Iterator[Session]:
    """A session subscribed to every node's events, which land in ``history`` before they are acknowledged: the
    operator's persistent session when no other piclusterctl holds it, a throw-away one otherwise.

    It subscribes to events only, ever: the broker keeps a persistent session's subscriptions and queues what
    they match while piclusterctl is away, and retained fleet messages must not fill that queue."""
    subs = (topics.all_nodes("events"),)
    taps = (lambda topic, payload: history.record_message(topics, topic, payload),)
    with _owner_lock(history.path) as owner:
        client_id = (
            (getattr(args, "client_id", None) or os.environ.get("PICLUSTER_CLIENT_ID") or persistent_client_id(
                topics.cluster))
            if owner
            else ""
        )  # fmt: skip
        with Session(
            broker, topics.cluster, subscriptions=subs, client_id=client_id, clean=not owner, taps=taps
        ) as session:
            yield session


FACT_KEYS = ("board", "model", "cpu", "cores", "memory_mb", "hostname", "sim")


def facts_of(fleet: Fleet, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """What the history keeps of each node's facts: enough to name the configuration in a report."""
    out = {}
    for node in nodes:
        facts = fleet.nodes[node].facts if node in fleet.nodes else None
        if facts is not None:
            out[node] = {k: getattr(facts, k) for k in FACT_KEYS}
    return out


class Tracker:
    """What ``run`` adds around a job: the history record, the persistent session, the wall meter.

    ``session`` is the run's own throw-away session (fleet, events, the plug); a second connection, the
    recorder, is the persistent session that stores every event in the history."""

    def __init__(
        self, args: argparse.Namespace, broker: Broker, topics: Topics, subscriptions: tuple[str, ...]
    ) -> None:
        self.args = args
        self.topics = topics
        self.history = History(history_path(args))
        topic = getattr(args, "power_topic", None) or os.environ.get("PICLUSTER_POWER_TOPIC", "")
        self.meter = WallMeter(topic) if topic else None
        self._stack = contextlib.ExitStack()
        self._recorder = recording_session(args, broker, topics, self.history)
        subs = (*subscriptions, *([self.meter.topic] if self.meter else ()))
        # What the run sees goes into the history too: the recorder may trail it when piclusterctl exits.
        taps = (lambda topic, payload: self.history.record_message(topics, topic, payload),)
        taps += (self.meter.tap,) if self.meter else ()
        self._session = Session(broker, topics.cluster, subscriptions=subs, taps=taps)
        self.session: Session
        self.submitted = 0.0
        self.detached = False
        self.offline: list[NodeRun] = []

    def __enter__(self) -> Tracker:
        try:
            self._stack.enter_context(self._recorder)  # first: subscribed before the job is submitted
            self.session = self._stack.enter_context(self._session)
        except BaseException:
            self._stack.close()
            self.history.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None or self.detached:
            self._close()
        # else the recorder stays connected until finished() has seen it store the verdicts the run saw

    def _close(self) -> None:
        self._stack.close()  # paho's threads are gone after this: nothing writes to the history any more
        self.history.close()

    def started(
        self,
        job: JobSpec,
        nodes: list[str],
        plan: dict[str, Any],
        facts: dict[str, Any],
        offline: list[NodeRun] | None = None,
    ) -> None:
        """Record the job: ``nodes`` it goes to, and the selected nodes that are ``offline`` (ended at once)."""
        self.submitted = time.time()
        self.offline = list(offline or [])
        self.history.job_started(job, self.topics.cluster, [*nodes, *(r.node for r in self.offline)], plan, facts)
        self._endings(job.id, self.offline)

    def detach(self, job: JobSpec, nodes: list[str], as_json: bool) -> int:
        """Submit, wait until every node has answered (accepted or rejected), and leave the rest to the history."""
        follower = Follower(
            self.topics, job.id, nodes, started=time.monotonic(), timeout_s=job.timeout_s, sent=self.session.sent
        )
        submit(self.session, job, nodes)
        while any(r.state == "submitted" for r in follower.runs.values()):
            follow_once(self.session, follower, lambda run: None, time.monotonic, lambda msg: None)
        self._endings(job.id, follower.runs.values())
        runs = [*follower.runs.values(), *self.offline]
        if as_json:
            report.print_json({**job_result(job.id, job.kind, "per-node", runs, state="detached"), "detached": True})
        else:
            for run in runs:
                print(report.run_line(run), file=sys.stderr)
            print(f"job {job.id} runs on; see it with: piclusterctl results {job.id}")
        self.detached = True  # the history stays open until the session is closed: events may still arrive
        return 0 if all(r.state not in TERMINAL or r.state == "finished" for r in runs) else 1

    def finished(self, job_id: str, runs: list[NodeRun], summary: dict[str, Any]) -> dict[str, Any]:
        """Store the controller's own endings and the job's summary, with the wall power of the run added."""
        try:
            self._settle(job_id, runs)
            return self._finish(job_id, runs, summary)
        finally:
            self._close()

    def _settle(self, job_id: str, runs: list[NodeRun]) -> None:
        """Wait (briefly) until the recorder, a connection of its own, has stored the verdicts the run saw."""
        verdicts = ("finished", "failed", "rejected", "cancelled")
        want = {r.node: r.state for r in runs if r.state in verdicts and not r.auth}  # auth: _endings stores it
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            job = self.history.job(job_id)
            stored = {r.node: r.state for r in job.runs} if job else {}
            if all(stored.get(node) == state for node, state in want.items()):
                return
            time.sleep(0.05)

    def _finish(self, job_id: str, runs: list[NodeRun], summary: dict[str, Any]) -> dict[str, Any]:
        self._endings(job_id, runs)
        if self.meter is not None:
            starts = [e["t"] for e in self.history.events(job_id) if e["kind"] == "started"]
            power = self.meter.window(min(starts, default=self.submitted), time.time())
            if power is not None:
                gflops = summary.get("gflops")
                summary.update(power.fields(gflops if gflops else None))
            else:
                print(_no_power(self.meter), file=sys.stderr)
        # The job-level result; each node's part is in the history already (node_runs).
        self.history.set_result(job_id, {k: v for k, v in summary.items() if k not in ("job", "runs")})
        return summary

    def _endings(self, job_id: str, runs: Any) -> None:
        for run in runs:
            ours = run.state in ("offline", "no-answer", "timeout") or run.auth  # endings the history cannot see
            if ours or run.reason == "interrupted by the operator":
                self.history.node_ended(job_id, run.node, run.state, run.reason)


def _no_power(meter: WallMeter) -> str:
    why = f" (bad payloads: {meter.errors[0]})" if meter.errors else ""
    return (
        f"piclusterctl: no wall power samples on {meter.topic!r} during the run{why}; check the plug's topic "
        "(zigbee2mqtt/<name>, tele/<dev>/SENSOR) and that it reports while the job runs"
    )


# --- the subcommands -----------------------------------------------------------------------------------------
def main(args: argparse.Namespace, broker: Broker, topics: Topics) -> int:
    history = History(history_path(args))
    try:
        if args.command == "cancel":
            return cmd_cancel(args, broker, topics, history)
        if args.command == "jobs":
            drain(args, broker, topics, history, lambda: history.jobs(limit=args.limit, cluster=topics.cluster))
            return cmd_jobs(history, topics, args)
        drain(args, broker, topics, history, lambda: [find_job(history, args.job, topics)])
        job = find_job(history, args.job, topics)
        if args.command == "results":
            return cmd_results(job, bool(args.json))
        return cmd_report(job, args)
    finally:
        history.close()


def drain(
    args: argparse.Namespace,
    broker: Broker,
    topics: Topics,
    history: History,
    shown: Callable[[], list[JobRecord]] = list,
) -> None:
    """Take in what the broker queued for the persistent session while no piclusterctl ran; then ask the nodes
    of the jobs about to be ``shown`` for what the history still lacks (a broker crash loses what it queued)."""
    try:
        with recording_session(args, broker, topics, history) as session:
            for _ in session.snapshot(DRAIN_S):
                pass  # the tap has stored them; the marker says the queue is empty
            resync(session, shown())
    except BrokerUnreachable as exc:
        print(f"piclusterctl: {exc}; showing the history as it is", file=sys.stderr)


def resync(session: Session, jobs: list[JobRecord], now: float | None = None) -> None:
    """``resend`` to every node without a verdict of its own in ``jobs``, and wait until each has answered (its
    events land in the history through the session's tap) or RESEND_WAIT_S has passed."""
    now = time.time() if now is None else now
    asked: set[tuple[str, str]] = set()
    for job in jobs:
        young = now - job.created < RESEND_AFTER_S
        nodes = [
            r.node
            for r in job.runs
            if r.state not in VERDICTS and r.reason != NOT_SENT and not (young and r.state in UNHEARD)
        ]
        resend(session, job.id, nodes)
        asked.update((job.id, node) for node in nodes)
    deadline = time.monotonic() + RESEND_WAIT_S
    told: set[str] = set()
    while asked and (msg := session.get(deadline - time.monotonic())) is not None:
        parsed = session.topics.parse(msg.topic)
        if parsed is None or parsed[1] != "events":
            continue
        with contextlib.suppress(ValueError):
            event = decode(msg.payload, Event)
            if session.refused_ours(event):  # a node would not take our resend: say why, once a job
                job_id = event.job.removesuffix(".resend")
                if job_id not in told:
                    told.add(job_id)
                    print(f"piclusterctl: {parsed[0]} refused to resend job {job_id}: {event.reason}", file=sys.stderr)
                asked.discard((job_id, parsed[0]))
            # A node's answer ends with its "resent" log, or is the refusal of a job it never received.
            elif "resent" in event.data or (event.kind in VERDICTS and not event.data.get("duplicate")):
                asked.discard((event.job, parsed[0]))


UNHEARD = ("submitted", "offline", "no-answer")  # states in which a node may not have received the job


def find_job(history: History, job_id: str | None, topics: Topics) -> JobRecord:
    if job_id is None:
        newest = history.jobs(limit=1, cluster=topics.cluster)
        if not newest:
            raise JobsUsageError(f"no jobs in {history.path} for cluster {topics.cluster!r}; start one with run")
        return newest[0]
    job = history.job(job_id)
    if job is None:
        raise JobsUsageError(f"job {job_id!r} is not in {history.path}; list them with: piclusterctl jobs")
    return job


def cmd_jobs(history: History, topics: Topics, args: argparse.Namespace) -> int:
    jobs = history.jobs(limit=args.limit, cluster=topics.cluster)
    if args.json:
        report.print_json([j.to_dict() for j in jobs])
        return 0
    if not jobs:
        print(f"no jobs in {history.path} for cluster {topics.cluster!r}", file=sys.stderr)
        return 0
    table = report.table("JOB", "KIND", "STATE", "NODES", "STARTED", "GFLOPS", right=("GFLOPS",))
    for job in jobs:
        gflops = results.job_gflops(job)
        table.add_row(
            job.id,
            job.kind,
            job.state,
            fold(job.nodes) if job.nodes else "-",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created)),
            "-" if gflops is None else f"{gflops:.2f}",
        )
    report.say(table)
    return 0


def cmd_results(job: JobRecord, as_json: bool) -> int:
    if as_json:
        report.print_json(job.to_dict())
        return 0 if job.state in ("passed", "running") else 1
    runs = [NodeRun(r.node, state=r.state, plan=r.plan, result=r.result, reason=r.reason) for r in job.runs]
    report.say(f"job {job.id} ({job.kind}): {job.state}")
    if job.kind == "hpl":
        report.say(report.hpl_results_table(runs)[0])
    else:
        report.say(report.kind_results_table(job.kind, runs, job.result))
        if build := report.build_line(job.result or {}):
            report.say(build)
    gflops = results.job_gflops(job)
    if gflops is not None:
        line = f"total: {gflops:.2f} Gflops from {sum(r.passed for r in runs)}/{len(runs)} node(s) passed"
        watts, source = results.job_watts(job)
        if watts:
            line += f"; {watts:.1f} W average ({source}), {gflops / watts:.2f} Gflops/W"
        report.say(line)
    return 0 if job.state in ("passed", "running") else 1


def cmd_report(job: JobRecord, args: argparse.Namespace) -> int:
    if args.format == "md":
        print(results.top500_row(job, name=args.name, link=args.link, arch=args.arch))
    elif args.format == "json":
        print(results.to_json(job))
    else:
        sys.stdout.write(results.to_csv(job))
    return 0


def cmd_cancel(args: argparse.Namespace, broker: Broker, topics: Topics, history: History) -> int:
    """Send cancel to the job's nodes and report each node's answer."""
    job = history.job(args.job)
    if args.nodes:
        try:
            nodes = expand(args.nodes)
        except SelectionError as exc:
            raise JobsUsageError(str(exc)) from None
    elif job is None:
        raise JobsUsageError(f"job {args.job!r} is not in {history.path}; name its nodes with --nodes NODESET")
    else:
        nodes = [r.node for r in job.runs if r.state not in TERMINAL]
        if not nodes:
            print(f"job {args.job} has ended on every node ({job.state}); nothing to cancel", file=sys.stderr)
            return 0
    with recording_session(args, broker, topics, history) as session:
        cancel(session, args.job, nodes)
        answers = _cancel_answers(session, topics, args.job, nodes)
    return _print_answers(answers, nodes, sys.stdout)


def _cancel_answers(session: Session, topics: Topics, job_id: str, nodes: list[str]) -> dict[str, str]:
    answers: dict[str, str] = {}
    deadline = time.monotonic() + CANCEL_WAIT_S
    while len(answers) < len(nodes) and (msg := session.get(deadline - time.monotonic())) is not None:
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[1] != "events" or parsed[0] not in nodes:
            continue
        try:
            event = decode(msg.payload, Event)
        except ValueError:
            continue
        if event.job == f"{job_id}.cancel" and session.refused_ours(event):
            answers[event.node] = f"refused: {event.reason}"
            continue
        if event.job != job_id:
            continue
        if event.kind == "log" and "not running" in event.message:
            answers[event.node] = "not running there"
        elif event.kind in ("cancelled", "finished", "failed"):
            answers[event.node] = event.kind + (f": {event.reason}" if event.reason else "")
    return answers


def _print_answers(answers: dict[str, str], nodes: list[str], out: IO[str]) -> int:
    for node in nodes:
        print(f"{node}: {answers.get(node, 'no answer')}", file=out)
    return 0 if all(n in answers for n in nodes) else 1
