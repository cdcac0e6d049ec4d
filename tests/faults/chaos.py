"""The chaos run: simulated agents (real processes, each with its own state dir), one Mosquitto configured with the
shipped persistence settings, jobs submitted through piclusterctl while the broker, agents and piclusterctl are
SIGKILLed at random moments; then the books are checked.

Everything random comes from one seed, so a failing schedule can be replayed (timing on a loaded machine still
varies; the seed fixes what happens and when it is asked for, not how the kernel schedules it).

What is checked, from the public surfaces only (piclusterctl's output and history, each node's run record):
- 0 results lost: every job run a node recorded has that node's own verdict in the history;
- 0 jobs run twice: no job id starts twice in a node's run record;
- exactly one verdict per node: one terminal event per (job, node) in the history; none only for a node that was
  offline when the job was submitted (it was not sent there);
- the history is complete: every job piclusterctl answered with is there, on every node it was sent to, ended.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.dispatch import NOT_SENT
from controller.history import History
from scripts.localcluster import SIM_JOBS_USER, stop
from tests.conftest import REPO, AgentFactory, AgentProc, paho_env
from tests.integration.durable_helpers import PersistentBroker

RECORD = Path(__file__).resolve().parent / "record.sh"
SHIPPED_BROKER = REPO / "systemd" / "mosquitto" / "picluster.conf"
# The shipped broker lines that decide what survives a crash; listener, login and ACL are the test's own.
DURABILITY_KEYS = ("persistence", "autosave_interval", "autosave_on_changes", "max_queued_messages", "set_tcp_nodelay")
NODE_VERDICTS = ("finished", "failed", "rejected", "cancelled")  # endings a node reports itself
CTL_ENDINGS = ("offline", "no-answer", "timeout")  # endings piclusterctl concludes when a node says nothing
ORPHAN = "the agent stopped unexpectedly"  # the start of the reason a restarted agent gives its orphaned jobs
# piclusterctl refusing before it submits anything, for as long as the broker is down or has not yet heard from
# a restarted node (a crashed broker forgets retained status since its last save until each node re-announces).
TRANSIENT = ("cannot reach the broker", "unknown node(s)")


@dataclass(frozen=True)
class Profile:
    """How much chaos: ``jobs`` submissions and the kills, spread at random over ``window_s`` seconds."""

    name: str
    agents: int
    jobs: int
    broker_kills: int
    agent_kills: int
    ctl_kills: int
    window_s: float
    hpl_share: float = 0.3  # the rest are light template jobs
    concurrency: int = 3  # piclusterctl processes at once


SHORT = Profile("short", agents=5, jobs=30, broker_kills=5, agent_kills=3, ctl_kills=1, window_s=40.0)
LONG = Profile("long", agents=10, jobs=100, broker_kills=20, agent_kills=10, ctl_kills=3, window_s=150.0)


@dataclass(frozen=True)
class JobOrder:
    """One submission: which kind, where, how big, and whether its piclusterctl is killed mid-run."""

    index: int
    at_s: float
    kind: str  # "record" (the light template) or "hpl" (per node)
    nodes: tuple[str, ...]
    size: float  # record: seconds; hpl: N
    kill_ctl: bool = False

    def argv(self) -> list[str]:
        where = ["--nodes", ",".join(self.nodes), "--timeout", "120"]
        if self.kind == "record":
            args = ["run", "record", *where, "--set", f"seconds={self.size:g}"]
        else:
            args = ["run", "hpl", "--per-node", *where, "--param", f"n={int(self.size)}", "--param", "nb=32"]
            args += ["--param", "p=1", "--param", "q=1"]
        # A killed piclusterctl follows its job (prints as it goes) rather than detaching.
        return args if self.kill_ctl else [*args, "--detach", "--json"]


@dataclass(frozen=True)
class Schedule:
    """What happens when, all drawn from ``seed``."""

    seed: int
    orders: tuple[JobOrder, ...]
    broker_kills: tuple[tuple[float, float], ...]  # (at, down for)
    agent_kills: tuple[tuple[float, str, float], ...]  # (at, node, down for)

    @classmethod
    def draw(cls, profile: Profile, seed: int) -> Schedule:
        rng = random.Random(seed)
        names = [f"c{i}" for i in range(1, profile.agents + 1)]
        window = profile.window_s
        killed = set(rng.sample(range(profile.jobs), profile.ctl_kills))
        orders = []
        for i, at in enumerate(sorted(rng.uniform(0, window) for _ in range(profile.jobs))):
            hpl = rng.random() < profile.hpl_share
            nodes = tuple(sorted(rng.sample(names, rng.choice((1, 1, 2, 3, len(names))))))
            size = rng.choice((400, 600, 800)) if hpl else round(rng.uniform(0.5, 4.0), 1)
            orders.append(JobOrder(i, at, "hpl" if hpl else "record", nodes, size, kill_ctl=i in killed))
        brokers = tuple(sorted((rng.uniform(0, window), rng.uniform(0.0, 1.5)) for _ in range(profile.broker_kills)))
        agents = tuple(
            sorted(
                (rng.uniform(0, window), rng.choice(names), rng.uniform(0.0, 3.0)) for _ in range(profile.agent_kills)
            )
        )
        return cls(seed, tuple(orders), tuple(brokers), tuple(agents))


class ShippedBroker(PersistentBroker):
    """Mosquitto with the durability settings of systemd/mosquitto/picluster.conf (what an operator runs), on a
    private port and directory, anonymous. ``kill()`` is a crash: no goodbye, no final save."""

    def durability(self) -> list[str]:
        return shipped_durability()


def shipped_durability() -> list[str]:
    """The lines of the shipped broker config that decide what a crash loses (persistence, autosave, queues)."""
    lines = []
    for raw in SHIPPED_BROKER.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words and words[0] in DURABILITY_KEYS:
            lines.append(" ".join(words))
    return lines


def agent_config(state: Path) -> str:
    """The chaos agents' config: the light template and hpcc both write the node's run record."""
    state.mkdir(parents=True, exist_ok=True)
    record = state / "runs.log"
    record.touch()
    if os.geteuid() == 0:  # the jobs append to it as the unprivileged jobs user
        pw = pwd.getpwnam(SIM_JOBS_USER)
        os.chown(record, pw.pw_uid, pw.pw_gid)
    hpcc = state / "hpcc"
    hpcc.write_text(f'#!/bin/sh\nexec /bin/sh {RECORD} {record} exec hpcc "$@"\n')
    hpcc.chmod(0o755)
    return (
        f'hpcc = "{hpcc}"\nkeep_jobs = 1000\n'
        f'[[jobs.template]]\nname = "record"\nargv = ["/bin/sh", "{RECORD}", "{record}", "{{seconds}}"]\n'
        'heavy = false\ntimeout_s = 60\n[jobs.template.params.seconds]\ntype = "float"\nmin = 0\nmax = 30\n'
    )


@dataclass
class Outcome:
    """What one chaos run did and found. ``problems`` is empty when every check held."""

    profile: Profile
    seed: int
    jobs: list[str] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    runs_recorded: int = 0
    broker_kills: int = 0
    agent_kills: int = 0
    ctl_kills: int = 0
    retries: int = 0
    duration_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items()))
        return (
            f"chaos {self.profile.name} seed={self.seed}: {len(self.jobs)} jobs on {self.profile.agents} agents, "
            f"{sum(self.verdicts.values())} node runs ({verdicts}), {self.runs_recorded} runs recorded; "
            f"killed: broker {self.broker_kills}, agents {self.agent_kills}, piclusterctl {self.ctl_kills}; "
            f"{self.retries} submissions retried; {self.duration_s:.0f} s; {len(self.problems)} problem(s)"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile.name,
            "seed": self.seed,
            "agents": self.profile.agents,
            "jobs": len(self.jobs),
            "verdicts": dict(self.verdicts),
            "reasons": dict(self.reasons),
            "runs_recorded": self.runs_recorded,
            "kills": {"broker": self.broker_kills, "agents": self.agent_kills, "piclusterctl": self.ctl_kills},
            "retries": self.retries,
            "duration_s": round(self.duration_s, 1),
            "problems": self.problems,
        }


class Chaos:
    """One chaos run in ``work``. Use as a context manager: every process it started is stopped on exit."""

    def __init__(self, profile: Profile, seed: int, work: Path, cluster: str, log: Callable[[str], None] = print):
        self.profile = profile
        self.schedule = Schedule.draw(profile, seed)
        self.work = work
        self.cluster = cluster
        self.log = log
        self.history = work / "history.sqlite3"
        (work / "broker").mkdir(parents=True, exist_ok=True)
        self.broker = ShippedBroker(work / "broker")
        self.agents = AgentFactory(work, self.broker, cluster)
        self.nodes = [f"c{i}" for i in range(1, profile.agents + 1)]
        self.procs: dict[str, AgentProc] = {}
        self.outcome = Outcome(profile, seed)
        self._lock = threading.Lock()
        self._broker_lock = threading.Lock()
        self.sent: dict[str, tuple[str, ...]] = {}  # job id -> the nodes piclusterctl says it went to

    def __enter__(self) -> Chaos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.agents.stop_all()
        self.broker.stop()

    # --- the run ---------------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        began = time.monotonic()
        self.broker.start()
        for i, node in enumerate(self.nodes):
            self._start_agent(node, i)
        self._wait_online(self.nodes, 60)
        self.log(f"chaos {self.profile.name}: seed {self.schedule.seed}, {len(self.nodes)} agents online")
        self._chaos(time.monotonic())
        if self.broker.proc is None:
            self.broker.start()
        for i, node in enumerate(self.nodes):
            if self.procs[node].proc.poll() is not None:
                self._start_agent(node, i)
        self._collect()
        self._check()
        self.outcome.duration_s = time.monotonic() - began
        return self.outcome

    def _start_agent(self, node: str, i: int) -> None:
        paho = ("1.6", "2.x")[i % 2]  # both paho majors in every run
        log = self.work / node / "agent.log"
        if log.exists():  # the factory starts each process on a fresh log: keep the killed one's
            log.rename(log.with_name(f"agent.log.{len(list(log.parent.glob('agent.log*')))}"))
        self.procs[node] = self.agents.start(node, paho=paho, config=agent_config(self.work / node))

    def _chaos(self, t0: float) -> None:
        """Submit the jobs and kill things, each at its time, until every submission has its answer."""
        actions: list[tuple[float, Callable[[], None]]] = []
        pool = ThreadPoolExecutor(self.profile.concurrency)
        futures: list[Future[None]] = []
        for order in self.schedule.orders:
            actions.append((order.at_s, lambda o=order: futures.append(pool.submit(self._submit, o))))
        for at, down in self.schedule.broker_kills:
            actions.append((at, lambda d=down: self._kill_broker(d)))
        for at, node, down in self.schedule.agent_kills:
            actions.append((at, lambda n=node, d=down: self._kill_agent(n, d)))
        try:
            for at, action in sorted(actions, key=lambda a: a[0]):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                action()
            for future in futures:
                future.result()
        finally:
            pool.shutdown(wait=True)

    def _kill_broker(self, down_s: float) -> None:
        with self._broker_lock:
            self.broker.kill()
            self.outcome.broker_kills += 1
            time.sleep(down_s)
            self.broker.start()

    def _kill_agent(self, node: str, down_s: float) -> None:
        self.procs[node].stop(signal.SIGKILL)
        self.outcome.agent_kills += 1
        time.sleep(down_s)
        self._start_agent(node, self.nodes.index(node))

    def _submit(self, order: JobOrder) -> None:
        """Run piclusterctl until it takes the job (a broker that is down for the moment is retried)."""
        for attempt in range(20):
            if attempt:
                with self._lock:
                    self.outcome.retries += 1
                time.sleep(1.0)
            job = self._follow_and_kill(order) if order.kill_ctl else self._detach(order)
            if job:
                with self._lock:
                    self.outcome.jobs.append(job)
                return
        self._problem(f"job #{order.index} ({order.kind}): piclusterctl never took it in 20 attempts")

    def _detach(self, order: JobOrder) -> str:
        proc = self._ctl(*order.argv(), timeout_s=90)
        if proc is None:
            return ""
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            if any(text in proc.stderr for text in TRANSIENT):
                return ""  # nothing was submitted: an operator would try again
            self._problem(f"job #{order.index}: piclusterctl exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
            return ""
        job = str(out["job"])
        self.sent[job] = tuple(out["nodes"])
        return job

    def _follow_and_kill(self, order: JobOrder) -> str:
        """Start piclusterctl following its job, SIGKILL it once the job is out; the job is collected later."""
        rng = random.Random(f"{self.schedule.seed}-{order.index}")
        argv = self._ctl_argv(*order.argv())
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **self._ctl_env())
        job = ""
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # "job ID: KIND on N node(s)" comes right before it is submitted
                if line.startswith("job ") and " on " in line:
                    job = line.split()[1].rstrip(":")
                    break
            if job:
                time.sleep(rng.uniform(0.2, 1.5))
                proc.send_signal(signal.SIGKILL)
                with self._lock:
                    self.outcome.ctl_kills += 1
        finally:
            stop(proc, signal.SIGKILL)  # type: ignore[arg-type]
            proc.communicate()
        if job:
            self.sent[job] = order.nodes
        return job

    def _ctl_env(self) -> dict[str, object]:
        return {"env": paho_env(None) | {"PICLUSTER_HISTORY": str(self.history)}, "cwd": REPO}

    def _ctl_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "controller.cli", "--broker", self.broker.url, "--cluster", self.cluster, *args]

    def _ctl(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                self._ctl_argv(*args), capture_output=True, text=True, timeout=timeout_s, **self._ctl_env()
            )  # type: ignore[call-overload]
        except subprocess.TimeoutExpired:
            self._problem(f"piclusterctl {' '.join(args)} hung for {timeout_s:g} s")
            return None

    def _wait_online(self, nodes: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._ctl("nodes", "--json", timeout_s=30)
            if proc is not None and proc.returncode == 0:
                online = {n["node"] for n in json.loads(proc.stdout or "[]") if n.get("status") == "online"}
                if online >= set(nodes):
                    return
            time.sleep(0.5)
        raise AssertionError(f"the chaos agents {nodes} did not all come online in {timeout_s:g} s")

    # --- collecting and checking -----------------------------------------------------------------------------
    def _collect(self, timeout_s: float = 180.0) -> None:
        """``results`` for every job until each has ended everywhere (the nodes finish what they run)."""
        pending = set(self.outcome.jobs)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for job in sorted(pending):
                proc = self._ctl("results", job, "--json", timeout_s=60)
                if proc is not None and proc.stdout.strip() and json.loads(proc.stdout)["state"] != "running":
                    pending.discard(job)
            if pending:
                time.sleep(1.0)
        for job in sorted(pending):
            self._problem(f"{job}: still running {timeout_s:g} s after the chaos ended")

    def _check(self) -> None:
        records = {node: run_record(self.work / node / "runs.log") for node in self.nodes}
        self.outcome.runs_recorded = sum(len(r) for r in records.values())
        for node, starts in records.items():
            for job, count in Counter(starts).items():
                if count > 1:
                    self._problem(f"{job} ran {count} times on {node}")
        listed = self._ctl("jobs", "--json", "--limit", "100000", timeout_s=60)
        stored = {j["id"]: j for j in json.loads(listed.stdout)} if listed is not None else {}
        for job in self.outcome.jobs:
            if job not in stored:
                self._problem(f"{job}: piclusterctl took it but `jobs` does not list it")
        for job in sorted(set(stored) - set(self.outcome.jobs)):
            self._problem(f"{job}: in the history but piclusterctl never answered with it")
        history = History(self.history)
        try:
            for job in self.outcome.jobs:
                if job in stored:
                    self._check_job(stored[job], history.events(job), records)
        finally:
            history.close()
        self._check_logs()

    def _check_job(self, job: dict[str, Any], events: list[dict[str, Any]], records: dict[str, list[str]]) -> None:
        jid = str(job["id"])
        runs = {str(r["node"]): r for r in job["runs"]}
        if set(runs) != set(self.sent.get(jid, ())):
            self._problem(f"{jid}: the history has nodes {sorted(runs)}, piclusterctl sent it to {self.sent.get(jid)}")
        for node, run in runs.items():
            state, reason = str(run["state"]), str(run["reason"])
            self.outcome.verdicts[state] += 1
            if state not in ("finished",):
                self.outcome.reasons[f"{state}: {reason[:70]}"] += 1
            endings = [
                e for e in events
                if e["node"] == node and e["kind"] in NODE_VERDICTS and not (e.get("data") or {}).get("duplicate")
            ]  # fmt: skip
            ran = jid in records.get(node, [])
            where = f"{jid} on {node}"
            if state in NODE_VERDICTS and len(endings) != 1:
                kinds = [e["kind"] for e in endings]
                self._problem(f"{where}: {len(endings)} verdicts in the history {kinds}, expected exactly one")
            elif state in CTL_ENDINGS:
                if endings:
                    self._problem(f"{where}: ended {state} by piclusterctl, yet the node sent {endings[0]['kind']}")
                if ran:
                    self._problem(f"{where}: the node ran it but its result was lost (history says {state}: {reason})")
                elif reason != NOT_SENT:  # every node is back by now: its own word should have replaced the guess
                    self._problem(f"{where}: a guess, though results asked the node ({state}: {reason})")
            elif state not in NODE_VERDICTS:
                self._problem(f"{where}: not ended ({state})")
            if state == "finished" and not run.get("result"):
                self._problem(f"{where}: finished without a result")
            if state in ("rejected",) and ran:
                self._problem(f"{where}: rejected, yet it ran")
            if state == "finished" and not ran:
                self._problem(f"{where}: finished, yet the node's run record does not have it")

    def _check_logs(self) -> None:
        for node in self.nodes:
            text = "".join(p.read_text(errors="replace") for p in sorted((self.work / node).glob("agent.log*")))
            for marker in ("Traceback", "event=tick_failed", "event=callback_error", "event=job_crash"):
                if marker in text:
                    line = next(ln for ln in text.splitlines() if marker in ln)
                    self._problem(f"{node}'s log has {marker}: {line[:200]}")

    def _problem(self, text: str) -> None:
        with self._lock:
            self.outcome.problems.append(text)


def run_record(path: Path) -> list[str]:
    """The job ids a node's run record says started, once per start."""
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("start ")]
