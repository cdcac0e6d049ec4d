"""The controller's job history: one SQLite file per operator (``$XDG_DATA_HOME/picluster/history.sqlite3``).

Every job piclusterctl starts (spec, plan, nodes), every event any node sends about a job, and the result. Events
are keyed by ``(node, job, seq)``, so a QoS 1 redelivery or an agent's spool replay is stored once. The
controller's persistent MQTT session writes here from paho's thread *before* it acknowledges a message, so
results that arrive while no piclusterctl runs are queued by the broker and land here at the next start.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.args import CommandFailed
from nodeagent.errors import ProtocolError
from nodeagent.protocol import Event, JobSpec, Topics, decode

SCHEMA_VERSION = 2  # 2: job results in results.job_result's shape (1 had per-node HPL's total_gflops)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, cluster TEXT NOT NULL, kind TEXT NOT NULL, created REAL NOT NULL,
    spec TEXT NOT NULL, plan TEXT NOT NULL, nodes TEXT NOT NULL, facts TEXT NOT NULL, result TEXT
);
CREATE TABLE IF NOT EXISTS events (
    node TEXT NOT NULL, job TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (node, job, seq)
);
CREATE TABLE IF NOT EXISTS node_runs (
    job TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, plan TEXT NOT NULL,
    result TEXT, updated REAL NOT NULL, PRIMARY KEY (job, node)
);
"""
# Endings a node reports, which stand; and those the controller concludes when a node is silent
# (dispatch.Follower), which the node's own word replaces when it comes after all.
VERDICTS = frozenset({"finished", "failed", "rejected", "cancelled"})
GUESSES = frozenset({"offline", "no-answer", "timeout"})
TERMINAL = VERDICTS | GUESSES


def job_state(endings: Iterable[tuple[str, bool]]) -> str:
    """A job's state from its nodes' (state, passed): ``running`` until every node ended; then ``passed`` if every
    node finished and passed, else the endings seen, e.g. ``failed`` or ``finished,offline``."""
    endings = list(endings)
    if not endings or any(state not in TERMINAL for state, _ in endings):
        return "running"
    if all(state == "finished" and passed for state, passed in endings):
        return "passed"
    return ",".join(sorted({state for state, _ in endings}))


class HistoryError(CommandFailed, OSError):
    """The history file cannot be opened or is from a newer piclusterctl."""


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """``PICLUSTER_HISTORY``, else ``$XDG_DATA_HOME/picluster/history.sqlite3`` (default ``~/.local/share``)."""
    env = os.environ if env is None else env
    if env.get("PICLUSTER_HISTORY"):
        return Path(env["PICLUSTER_HISTORY"])
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "picluster" / "history.sqlite3"


@dataclass(frozen=True)
class NodeRecord:
    """One node's part of a job, as stored."""

    node: str
    state: str
    reason: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state, "reason": self.reason, "plan": self.plan, "result": self.result}


@dataclass(frozen=True)
class JobRecord:
    """One job: what was asked, of whom, and what came back."""

    id: str
    cluster: str
    kind: str
    created: float
    spec: dict[str, Any]
    plan: dict[str, Any]
    nodes: list[str]
    facts: dict[str, Any]
    result: dict[str, Any] | None
    runs: list[NodeRecord]

    @property
    def state(self) -> str:
        """The job's state from its nodes' endings (``job_state``)."""
        return job_state((r.state, bool((r.result or {}).get("passed"))) for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cluster": self.cluster,
            "kind": self.kind,
            "created": self.created,
            "state": self.state,
            "spec": self.spec,
            "plan": self.plan,
            "nodes": self.nodes,
            "facts": self.facts,
            "result": self.result,
            "runs": [r.to_dict() for r in self.runs],
        }


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _v2(result: dict[str, Any]) -> dict[str, Any]:
    """A version 1 job result in version 2's shape."""
    if "total_gflops" in result:
        result = {k: v for k, v in result.items() if k != "total_gflops"} | {"gflops": result["total_gflops"]}
    return {"mode": "cluster" if "leader" in result else "per-node", **result}


class History:
    """The history file. Thread-safe (paho's thread records events while the CLI thread reads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # As the agent's spool: a crash of piclusterctl loses nothing, a power cut may lose the last commits.
            # FULL synced the log on every commit: 6 of them per event, 20 ms a node of a 1,000-node run.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) < SCHEMA_VERSION:
                self._migrate(int(row[0]))
            elif int(row[0]) > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema {row[0]} is newer than this piclusterctl's ({SCHEMA_VERSION}); "
                    "upgrade piclusterctl or pass --history with another file"
                )
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, HistoryError):
                raise
            raise HistoryError(
                f"{self.path}: cannot open the job history ({exc}); pass --history PATH (or PICLUSTER_HISTORY) "
                "with a writable file"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self, version: int) -> None:
        """Bring an older file's job results to this version's shape, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version < 2:  # per-node HPL stored its sum as total_gflops and said no mode
                for job_id, text in self._db.execute("SELECT id, result FROM jobs WHERE result IS NOT NULL").fetchall():
                    result = _loads(text)
                    if isinstance(result, dict):
                        self._db.execute("UPDATE jobs SET result = ? WHERE id = ?", (_dumps(_v2(result)), job_id))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- writing ---------------------------------------------------------------------------------------------
    def job_started(
        self,
        job: JobSpec,
        cluster: str,
        nodes: list[str],
        plan: Mapping[str, Any],
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a job piclusterctl is about to submit."""
        spec = {
            "id": job.id,
            "kind": job.kind,
            "params": job.params,
            "node_params": job.node_params,
            "timeout_s": job.timeout_s,
            "force": job.force,
        }
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "(SELECT result FROM jobs WHERE id = ?))",
                (job.id, cluster, job.kind, time.time(), _dumps(spec), _dumps(plan), _dumps(nodes),
                 _dumps(dict(facts or {})), job.id),
            )  # fmt: skip
            for node in nodes:
                self._db.execute(
                    "INSERT OR IGNORE INTO node_runs VALUES (?, ?, 'submitted', '', ?, NULL, ?)",
                    (job.id, node, _dumps(plan.get(node, {})), time.time()),
                )

    def record_message(self, topics: Topics, topic: str, payload: bytes) -> bool:
        """An MQTT message from the controller's session: job events are stored, the rest ignored."""
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != "events":
            return False
        try:
            event = decode(payload, Event)
        except ProtocolError:
            return False
        return self.record_event(event, topics.cluster)

    def record_event(self, event: Event, cluster: str = "") -> bool:
        """Store one event; True if it was new. Updates the node's state unless it already ended."""
        if not event.job:
            return False
        body = {k: v for k, v in event.__dict__.items() if k not in ("node", "job", "seq", "t", "kind")}
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one commit for the event and what it changes, not one each
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event.node, event.job, event.seq, event.t, event.kind, _dumps(body), now),
                )
                if cur.rowcount:
                    kind = event.job.split("-", 1)[0]
                    self._db.execute(
                        "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?, '{}', '{}', ?, '{}', NULL)",
                        (event.job, cluster, kind, event.t, _dumps([event.node])),
                    )  # a job another piclusterctl started: known from its events only
                    self._update_run(event, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return bool(cur.rowcount)  # False: a duplicate (a QoS 1 redelivery or a spool replay)

    def _update_run(self, event: Event, now: float) -> None:
        update: dict[str, Any] = {}
        if event.kind == "accepted":  # (a reason left by a guess the node has now disproved goes)
            update = {"state": "accepted", "reason": "", "plan": _dumps(event.data.get("plan") or {})}
        elif event.kind in ("started", "progress"):
            update = {"state": "running", "reason": ""}
        elif event.kind == "finished":
            update = {"state": "finished", "result": _dumps(event.result or {})}
        elif event.kind in ("failed", "cancelled") or (event.kind == "rejected" and not _copy(event)):
            update = {"state": event.kind, "reason": event.reason}
        if not update:
            return
        self._db.execute(
            "INSERT OR IGNORE INTO node_runs VALUES (?, ?, 'submitted', '', '{}', NULL, ?)",
            (event.job, event.node, now),
        )
        row = self._db.execute(
            "SELECT state FROM node_runs WHERE job = ? AND node = ?", (event.job, event.node)
        ).fetchone()
        if row[0] in VERDICTS:
            return  # a node's ending stands (a late progress replayed from a spool must not reopen it)
        sets = ", ".join(f"{k} = ?" for k in update)
        self._db.execute(
            f"UPDATE node_runs SET {sets}, updated = ? WHERE job = ? AND node = ?",
            (*update.values(), now, event.job, event.node),
        )
        nodes = _loads(self._db.execute("SELECT nodes FROM jobs WHERE id = ?", (event.job,)).fetchone()[0])
        if event.node not in nodes:
            self._db.execute("UPDATE jobs SET nodes = ? WHERE id = ?", (_dumps([*nodes, event.node]), event.job))

    def node_ended(self, job_id: str, node: str, state: str, reason: str) -> None:
        """An ending the controller concluded itself (offline, no-answer, timeout, interrupted)."""
        with self._lock:
            self._db.execute(
                "UPDATE node_runs SET state = ?, reason = ?, updated = ? WHERE job = ? AND node = ? AND state NOT IN "
                f"({','.join('?' * len(TERMINAL))})",
                (state, reason, time.time(), job_id, node, *sorted(TERMINAL)),
            )

    def set_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        """The job-level result (a cluster result, or the summary of per-node results), merged into what is
        stored."""
        with self._lock:
            row = self._db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            merged = {**(_loads(row[0]) or {}), **result}
            self._db.execute("UPDATE jobs SET result = ? WHERE id = ?", (_dumps(merged), job_id))

    # --- reading ---------------------------------------------------------------------------------------------
    def job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            runs = self._db.execute(
                "SELECT node, state, reason, plan, result FROM node_runs WHERE job = ? ORDER BY node", (job_id,)
            ).fetchall()
        if row is None:
            return None
        jid, cluster, kind, created, spec, plan, nodes, facts, result = row
        records = [NodeRecord(n, s, r, _loads(p) or {}, _loads(res)) for n, s, r, p, res in runs]
        order = {n: i for i, n in enumerate(_loads(nodes))}
        records.sort(key=lambda r: (order.get(r.node, len(order)), r.node))
        return JobRecord(
            jid, cluster, kind, created, _loads(spec), _loads(plan), _loads(nodes), _loads(facts), _loads(result),
            records,
        )  # fmt: skip

    def jobs(self, limit: int = 50, cluster: str | None = None) -> list[JobRecord]:
        """The newest jobs first."""
        with self._lock:
            ids = self._db.execute(
                "SELECT id FROM jobs WHERE ? IS NULL OR cluster IN (?, '') ORDER BY created DESC, id DESC LIMIT ?",
                (cluster, cluster, limit),
            ).fetchall()
        return [job for (jid,) in ids if (job := self.job(jid)) is not None]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Every event stored for a job, in the order the nodes sent them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT node, seq, t, kind, body FROM events WHERE job = ? ORDER BY t, node, seq", (job_id,)
            ).fetchall()
        return [{"node": n, "seq": s, "t": t, "kind": k, **_loads(b)} for n, s, t, k, b in rows]


def _copy(event: Event) -> bool:
    """A refusal that is not the node's word on the job: of a duplicate, or of a command's signature (which a
    forged copy may earn; the controller that sent the refused command records that refusal itself)."""
    return bool(event.data.get("duplicate")) or "auth" in event.data
