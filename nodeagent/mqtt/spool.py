"""The agent's on-disk spool: every event is written here before it is published and deleted when the broker
acknowledges it (PUBACK), so a broker restart, a network cut or an agent crash loses nothing.

One SQLite file in ``agent.state_dir`` (``spool.sqlite3``) holds three things that must survive a restart:

- ``pending``: events not yet acknowledged, in ``seq`` order; replayed at start-up, in that order.
- the event ``seq`` counter: per node, strictly increasing across restarts, so receivers can drop duplicates by
  ``(node, job, seq)``.
- ``seen_jobs``: the job ids this node has received (the newest ``max_seen_jobs``; up to a tenth more between two
  trims), so a job runs at most once whatever the broker redelivers and whether or not the agent restarted.

The spool is bounded (``max_events``). When it is full the oldest ``progress`` events go first, then other
events that end no job; results and other terminal events are never dropped. Every drop is logged.
WAL with ``synchronous=NORMAL``: a process crash loses nothing; a power cut may lose the last commits.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("picluster.spool")

FILE_NAME = "spool.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, kind TEXT NOT NULL, keep INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_jobs (job TEXT PRIMARY KEY, t REAL NOT NULL);
"""
# Events the spool never drops when full: a job's verdict, however long the broker stays away.
KEEP = frozenset({"accepted", "rejected", "finished", "failed", "cancelled"})


class SpoolError(OSError):
    """The spool file cannot be opened or written (disk full, read-only state dir, not a SQLite file)."""


@dataclass(frozen=True)
class Pending:
    """One unacknowledged event."""

    seq: int
    topic: str
    payload: bytes
    kind: str


class Spool:
    """Write-ahead store of outgoing events. Thread-safe: the agent, job and paho threads all call it."""

    def __init__(self, state_dir: str | Path | None, *, max_events: int = 10000, max_seen_jobs: int = 10000) -> None:
        """``state_dir`` None: in memory only (the agent's fallback when the directory is unusable)."""
        self.path = Path(state_dir) / FILE_NAME if state_dir is not None else Path(":memory:")
        self.max_events = max_events
        self.max_seen_jobs = max_seen_jobs
        self._lock = threading.Lock()
        try:
            if state_dir is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise SpoolError(
                    f"{self.path}: spool schema {version} is not {SCHEMA_VERSION}; this agent is older than the "
                    "one that wrote it: upgrade the agent, or move the file away (its unsent events are lost)"
                )
        except SpoolError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(
                f"{self.path}: cannot open the event spool ({exc}); check that agent.state_dir is writable by the "
                "agent and the file is not damaged (move it away to start afresh)"
            ) from None
        self._last_seq = self._meta("last_seq") or 0
        self._seen = int(self._db.execute("SELECT count(*) FROM seen_jobs").fetchone()[0])

    def close(self) -> None:
        """Close the file; what the broker has not acknowledged is sent at the next start."""
        if unsent := len(self):
            log.warning("event=spool_unsent events=%d path=%s action='sent at the next start'", unsent, self.path)
        with self._lock:
            self._db.close()

    # --- events ----------------------------------------------------------------------------------------------
    def append(self, make: Callable[[int], bytes], topic: str, kind: str) -> Pending:
        """Take the next ``seq``, build the payload with ``make(seq)`` and store it, in one transaction."""
        with self._lock:
            seq = self._last_seq + 1
            payload = make(seq)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (seq,))
                self._db.execute(
                    "INSERT INTO pending VALUES (?, ?, ?, ?, ?)", (seq, topic, payload, kind, int(kind in KEEP))
                )
                self._trim()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                # The event still goes out (at most once, from memory): losing the disk must not silence the node.
                log.error("event=spool_write_failed path=%s seq=%d reason=%r", self.path, seq, str(exc))
            self._last_seq = seq
            return Pending(seq, topic, payload, kind)

    def ack(self, seq: int) -> None:
        """The broker has it: forget it."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:
                log.warning("event=spool_ack_failed seq=%d reason=%r", seq, str(exc))

    def pending(self) -> list[Pending]:
        """Unacknowledged events, oldest first (what a restarted agent sends again)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, kind FROM pending ORDER BY seq").fetchall()
        return [Pending(s, t, bytes(p), k) for s, t, p, k in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def _trim(self) -> None:
        """Called inside a transaction: drop the oldest droppable events beyond ``max_events``."""
        over = int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0]) - self.max_events
        if over <= 0:
            return
        # progress first (each one is superseded by the next), then other events that carry no verdict.
        victims = self._db.execute(
            "SELECT seq, kind FROM pending WHERE keep = 0 ORDER BY kind != 'progress', seq LIMIT ?", (over,)
        ).fetchall()
        for seq, kind in victims:
            self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
            log.warning(
                "event=spool_full dropped_seq=%d dropped_kind=%s max_events=%d fix='the broker has been away "
                "long; results are kept, progress is dropped first'",
                seq,
                kind,
                self.max_events,
            )

    # --- job ids ---------------------------------------------------------------------------------------------
    def first_sight(self, job_id: str, now: float | None = None) -> bool:
        """Record ``job_id``; True the first time this node sees it, False for every later copy."""
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO seen_jobs VALUES (?, ?)", (job_id, time.time() if now is None else now)
                )
                self._seen += cur.rowcount
                # Trim in batches: sorting every id on every job cost 25 ms a job at 10,000 ids (x86 VM).
                if cur.rowcount and self.max_seen_jobs and self._seen > self.max_seen_jobs + self.max_seen_jobs // 10:
                    self._db.execute(
                        "DELETE FROM seen_jobs WHERE rowid IN (SELECT rowid FROM seen_jobs ORDER BY t, rowid LIMIT ?)",
                        (self._seen - self.max_seen_jobs,),
                    )
                    self._seen = self.max_seen_jobs
                return bool(cur.rowcount)
            except sqlite3.Error as exc:
                log.error("event=seen_jobs_write_failed job=%s reason=%r", job_id, str(exc))
                return True  # the runner's job-directory check still refuses a repeat

    # --- meta ------------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def open_spool(state_dir: str, max_events: int, max_seen_jobs: int) -> Spool:
    """The spool in ``state_dir``; in memory, with an error, when the directory is unusable: the node's safety
    never depends on its disk."""
    try:
        return Spool(state_dir, max_events=max_events, max_seen_jobs=max_seen_jobs)
    except SpoolError as exc:
        log.error("event=spool_unavailable reason=%r action='events are kept in memory only'", str(exc))
        return Spool(None, max_events=max_events, max_seen_jobs=max_seen_jobs)
