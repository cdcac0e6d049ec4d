"""The agent's on-disk spool: every event is written here before it is published and deleted when the broker
acknowledges it (PUBACK), so a broker restart, a network cut or an agent crash loses nothing.

One SQLite file in ``agent.state_dir`` (``spool.sqlite3``) holds three things that must survive a restart:

- ``pending``: events not yet acknowledged, in ``seq`` order; replayed at start-up, in that order.
- the event ``seq`` counter: per node, strictly increasing across restarts, so receivers can drop duplicates by
  ``(node, job, seq)``.
- ``seen_jobs``: the job ids this node has received (the newest ``max_seen_jobs``; up to a tenth more between two
  trims), so a job runs at most once whatever the broker redelivers and whether or not the agent restarted.
- ``job_events``: what this node said about each job it received (accepted, started and its verdict), kept after
  the broker has it, as long as the job id is remembered. A broker crash can lose an event it had acknowledged
  (Mosquitto saves its queues every ``autosave_interval``); piclusterctl then asks again (``resend``) and gets
  the same events with the same ``seq``. A received job with no verdict here when the agent starts was cut off
  by the agent's own death (an orphan), however far it got.

The spool is bounded (``max_events``). When it is full the oldest ``progress`` events go first, then other
events that end no job; results and other terminal events are never dropped. Every drop is logged.
WAL with ``synchronous=NORMAL``: a process crash loses nothing; a power cut may lose the last commits.

When the file cannot be written (the state dir's disk is full, or it went read-only), events and job ids are held
in memory (bounded by the same rules), still published, and written to disk with the next write that succeeds
(``flush()`` retries); ``trouble`` says why meanwhile. Held events are lost if the agent stops before that.
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
CREATE TABLE IF NOT EXISTS job_events (
    job TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (job, kind)
);
"""
# Added to a schema 1 file by a later agent, which older agents ignore: jobs received before it are not judged.
_SINCE = "INSERT OR IGNORE INTO meta VALUES ('job_events_since', (SELECT coalesce(max(rowid), 0) FROM seen_jobs))"
VERDICTS = frozenset({"rejected", "finished", "failed", "cancelled"})
# Events the spool never drops when full: a job's verdict, however long the broker stays away.
KEEP = frozenset({"accepted", *VERDICTS})
LIFECYCLE = frozenset({"accepted", "started", *VERDICTS})  # kept per job for resend


class SpoolError(OSError):
    """The spool file cannot be opened or written (disk full, read-only state dir, not a SQLite file)."""


@dataclass(frozen=True)
class Pending:
    """One unacknowledged event."""

    seq: int
    topic: str
    payload: bytes
    kind: str


@dataclass
class _Held:
    """An event that could not be written yet: the broker may acknowledge it meanwhile, but what it says about
    its job is still to be kept."""

    item: Pending
    job: str
    acked: bool = False

    @property
    def said(self) -> bool:
        return bool(self.job) and self.item.kind in LIFECYCLE


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
            self._db.execute(_SINCE)
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
        self._held: list[_Held] = []  # events the file could not take yet, oldest first
        self._held_seen: dict[str, float] = {}  # job ids likewise
        self._held_acks: set[int] = set()  # acknowledged events the file still has as pending
        self.trouble = ""  # why the file cannot be written now ("" when it can)
        self._seen = int(self._db.execute("SELECT count(*) FROM seen_jobs").fetchone()[0])

    def close(self) -> None:
        """Close the file; what the broker has not acknowledged is sent at the next start."""
        if unsent := len(self):
            log.warning("event=spool_unsent events=%d path=%s action='sent at the next start'", unsent, self.path)
        with self._lock:
            self._db.close()

    # --- events ----------------------------------------------------------------------------------------------
    def append(self, make: Callable[[int], bytes], topic: str, kind: str, job: str = "") -> Pending:
        """Take the next ``seq``, build the payload with ``make(seq)`` and store it, in one transaction. With
        ``job``, a lifecycle event is also kept as what this node said about that job (the first of each kind)."""
        with self._lock:
            seq = self._last_seq + 1
            item = Pending(seq, topic, make(seq), kind)
            self._last_seq = seq
            self._held.append(_Held(item, job))
            self._write_held()  # the event still goes out if this fails: losing the disk must not silence the node
            return item

    def flush(self) -> bool:
        """Try again to write what is held in memory; True when nothing is held any more."""
        with self._lock:
            if self._held or self._held_seen or self._held_acks:
                self._write_held()
            return not self.trouble

    def _write_held(self) -> None:
        """Called with the lock held: everything held, in one transaction; on failure it stays held (bounded)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for seq in self._held_acks:
                self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
            for job, t in self._held_seen.items():
                self._db.execute("INSERT OR IGNORE INTO seen_jobs VALUES (?, ?)", (job, t))
            for held in self._held:
                seq, topic, payload, kind = held.item.seq, held.item.topic, held.item.payload, held.item.kind
                if not held.acked:
                    self._db.execute(
                        "INSERT INTO pending VALUES (?, ?, ?, ?, ?)", (seq, topic, payload, kind, int(kind in KEEP))
                    )
                if held.said:
                    self._db.execute(
                        "INSERT OR IGNORE INTO job_events VALUES (?, ?, ?, ?, ?)", (held.job, kind, seq, topic, payload)
                    )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (self._last_seq,))
            self._trim()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._trim_held()
            self._note_trouble(str(exc))
            return
        if self.trouble:
            log.warning("event=spool_written_again path=%s held=%d", self.path, len(self._held))
        self.trouble = ""
        if self._held_seen:  # first_sight's count of the ids, for its batched trim
            self._seen = int(self._db.execute("SELECT count(*) FROM seen_jobs").fetchone()[0])
        self._held.clear()
        self._held_seen.clear()
        self._held_acks.clear()

    def _note_trouble(self, reason: str) -> None:
        if not self.trouble:  # once per spell: the agent says it, with the fix, as an alert too
            log.error(
                "event=spool_write_failed path=%s reason=%r action='events are held in memory until it can be written'",
                self.path,
                reason,
            )
        self.trouble = reason

    def ack(self, seq: int) -> None:
        """The broker has it: forget it (what it says about its job is kept)."""
        with self._lock:
            for held in self._held:
                if held.item.seq == seq:
                    held.acked = True
            self._held = [h for h in self._held if not h.acked or h.said]
            try:
                self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:
                self._held_acks.add(seq)  # not sent again by this process; deleted when the file takes writes
                self._note_trouble(str(exc))

    def pending(self) -> list[Pending]:
        """Unacknowledged events, oldest first (what a restarted agent sends again)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, kind FROM pending ORDER BY seq").fetchall()
            held = [h.item for h in self._held if not h.acked]
            on_disk = [Pending(s, t, bytes(p), k) for s, t, p, k in rows if s not in self._held_acks]
        return sorted([*on_disk, *held], key=lambda p: p.seq)

    def __len__(self) -> int:
        with self._lock:
            if not (self._held or self._held_acks):
                return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])
        return len(self.pending())

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

    def _trim_held(self) -> None:
        """What is held in memory obeys the same bound and the same order of sacrifice as the file."""
        over = sum(not h.acked for h in self._held) - self.max_events
        if over <= 0:
            return
        droppable = [h for h in self._held if not h.acked and h.item.kind not in KEEP]
        for victim in sorted(droppable, key=lambda h: (h.item.kind != "progress", h.item.seq))[:over]:
            victim.acked = True  # out of pending; what it says about its job (never for droppable kinds) stays
            log.warning("event=spool_full dropped_seq=%d dropped_kind=%s in=memory", victim.item.seq, victim.item.kind)
        self._held = [h for h in self._held if not h.acked or h.said]

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
                    # What was said about a forgotten job goes with it.
                    self._db.execute("DELETE FROM job_events WHERE job NOT IN (SELECT job FROM seen_jobs)")
                return bool(cur.rowcount)
            except sqlite3.Error as exc:
                known = job_id in self._held_seen or self._seen_on_disk(job_id)
                if not known:
                    self._held_seen[job_id] = time.time() if now is None else now
                self._note_trouble(str(exc))
                return not known

    def _seen_on_disk(self, job_id: str) -> bool:
        with contextlib.suppress(sqlite3.Error):
            return self._db.execute("SELECT 1 FROM seen_jobs WHERE job = ?", (job_id,)).fetchone() is not None
        return False

    def job_events(self, job_id: str) -> list[Pending]:
        """What this node said about ``job_id`` (accepted, started, its verdict), in ``seq`` order."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload, kind FROM job_events WHERE job = ? ORDER BY seq", (job_id,)
                ).fetchall()
            except sqlite3.Error as exc:
                log.error("event=spool_read_failed job=%s reason=%r", job_id, str(exc))
                rows = []
            said = {k: Pending(s, t, bytes(p), k) for s, t, p, k in rows}
            for held in self._held:
                if held.job == job_id and held.said:
                    said.setdefault(held.item.kind, held.item)
        return sorted(said.values(), key=lambda p: p.seq)

    def unended(self) -> list[str]:
        """Jobs this node received and gave no verdict for, oldest first. Called at start-up, before any job
        runs: each was cut off by the previous agent's end (killed, crashed, or the machine went down)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT job FROM seen_jobs WHERE rowid > (SELECT value FROM meta WHERE key = 'job_events_since') "
                    f"AND job NOT IN (SELECT job FROM job_events WHERE kind IN ({','.join('?' * len(VERDICTS))})) "
                    "ORDER BY rowid",
                    tuple(sorted(VERDICTS)),
                ).fetchall()
            except sqlite3.Error as exc:
                log.error("event=spool_read_failed reason=%r", str(exc))
                return []
        return [job for (job,) in rows]

    # --- meta ------------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def open_spool(state_dir: str | Path, max_events: int, max_seen_jobs: int) -> Spool:
    """The spool in ``state_dir``; in memory, with an error, when the directory is unusable: the node's safety
    never depends on its disk."""
    try:
        return Spool(state_dir, max_events=max_events, max_seen_jobs=max_seen_jobs)
    except SpoolError as exc:
        log.error("event=spool_unavailable reason=%r action='events are kept in memory only'", str(exc))
        return Spool(None, max_events=max_events, max_seen_jobs=max_seen_jobs)
