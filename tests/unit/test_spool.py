"""The agent's event spool and outbox: append, acknowledge, restart and replay in any order never lose or
duplicate an event; seq only grows; a full spool drops progress first and verdicts never; job ids are
remembered across restarts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.mqtt.outbox import Outbox
from nodeagent.mqtt.spool import KEEP, LIFECYCLE, VERDICTS, Spool

KINDS = ["progress", "log", "alert", "accepted", "started", "finished", "failed"]

# An operation: ("append", kind) | ("ack", index into what is unacknowledged) | ("restart",)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(KINDS)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)


def _payload(seq: int) -> bytes:
    return f"event {seq}".encode()


@settings(max_examples=60, deadline=None)
@given(ops)
def test_any_order_of_append_ack_and_restart_keeps_exactly_the_unacked(steps: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp, max_events=1000)
        unacked: list[int] = []
        all_seqs: list[int] = []
        for op, arg in steps:
            if op == "append":
                item = spool.append(_payload, "t/events", str(arg))
                assert item.payload == _payload(item.seq)
                unacked.append(item.seq)
                all_seqs.append(item.seq)
            elif op == "ack" and unacked:
                seq = unacked.pop(int(arg) % len(unacked))  # type: ignore[call-overload]
                spool.ack(seq)
                spool.ack(seq)  # a second PUBACK for the same message changes nothing
            elif op == "restart":
                spool.close()
                spool = Spool(tmp, max_events=1000)
            assert [p.seq for p in spool.pending()] == sorted(unacked)
        assert all_seqs == sorted(set(all_seqs)), "seq must strictly increase, across restarts too"
        spool.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=40), st.integers(1, 10))
def test_a_full_spool_drops_progress_first_and_never_a_verdict(kinds: list[str], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp, max_events=limit)
        for kind in kinds:
            spool.append(_payload, "t/events", kind)
        kept = spool.pending()
        verdicts = [k for k in kinds if k in KEEP]
        assert [p.kind for p in kept if p.kind in KEEP] == verdicts  # every verdict, in order
        assert len(kept) == max(limit, len(verdicts)) if len(kinds) > limit else len(kept) == len(kinds)
        dropped_progress = kinds.count("progress") - [p.kind for p in kept].count("progress")
        dropped_other = len(kinds) - len(kept) - dropped_progress
        if dropped_other:  # something other than progress went only once no progress was left to drop
            assert all(p.kind != "progress" for p in kept)
        spool.close()


def test_job_ids_are_remembered_across_restarts_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_seen_jobs=3)
    assert spool.first_sight("j1", now=1) and not spool.first_sight("j1", now=2)
    spool.close()
    spool = Spool(tmp_path, max_seen_jobs=3)
    assert not spool.first_sight("j1", now=3)
    for i, job in enumerate(("j2", "j3", "j4"), start=4):
        assert spool.first_sight(job, now=i)
    assert spool.first_sight("j1", now=9)  # the oldest id was forgotten once four newer ones were seen
    assert not spool.first_sight("j4", now=10)
    spool.close()


def test_a_spool_file_that_is_not_sqlite_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "spool.sqlite3").write_bytes(b"this is not a database" * 100)
    try:
        Spool(tmp_path)
    except OSError as exc:
        assert str(tmp_path / "spool.sqlite3") in str(exc) and "move it away" in str(exc)
    else:
        raise AssertionError("a damaged spool must refuse to open")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "ack_next", "ack_early", "qos0"]), st.booleans()), max_size=40))
def test_outbox_forgets_exactly_what_was_acknowledged_even_when_the_ack_beats_publish(
    steps: list[tuple[str, bool]],
) -> None:
    """paho may report a PUBACK before publish() returns its mid; QoS 0 mids are reported too and bound to
    nothing. Neither may drop an event that was not acknowledged."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp)
        mids = iter(range(1, 10_000))
        sent: list[tuple[int, int]] = []  # (mid, seq) published, not acknowledged yet
        acked: set[int] = set()
        box: Outbox
        early = False

        def publish(topic: str, payload: bytes) -> int:
            mid = next(mids)
            if early:  # the broker answered before publish() returned
                box.acked(mid)
            return mid

        box = Outbox(spool, publish, clock=lambda: 0.0)
        for op, flag in steps:
            if op in ("send", "ack_early"):
                early = op == "ack_early"
                item = box.send("t/events", "progress", _payload)
                if early:
                    acked.add(item.seq)
                else:
                    sent.append((mid_of_last(box, item.seq), item.seq))
            elif op == "ack_next" and sent:
                mid, seq = sent.pop(0 if flag else -1)
                box.acked(mid)
                acked.add(seq)
            elif op == "qos0":
                box.acked(next(mids))  # telemetry's mid: bound to nothing
        assert {p.seq for p in spool.pending()} == {seq for _, seq in sent}
        assert not acked & {p.seq for p in spool.pending()}
        spool.close()


def mid_of_last(box: Outbox, seq: int) -> int:
    return next(mid for mid, s in box._inflight.items() if s == seq)


def test_a_spool_from_a_newer_agent_is_refused_with_the_fix(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool._db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    spool.close()
    try:
        Spool(tmp_path)
    except OSError as exc:
        assert "spool schema 99" in str(exc) and "upgrade the agent" in str(exc)
    else:
        raise AssertionError("a newer spool must not be used")


# A job's life on a node, in any interleaving with acks and restarts: (job index, kind) or ("restart",).
JOB_KINDS = ["accepted", "started", "progress", "log", "finished", "failed", "cancelled", "rejected"]
lives = st.lists(
    st.one_of(st.tuples(st.integers(0, 4), st.sampled_from(JOB_KINDS)), st.tuples(st.just("restart"))),
    max_size=50,
)


@settings(max_examples=60, deadline=None)
@given(lives)
def test_what_a_node_said_about_each_job_outlives_the_ack_and_restarts(steps: list[tuple[object, ...]]) -> None:
    """resend gets back the first accepted, started and verdict of a job, with their seq, after the broker has
    acknowledged them and across restarts; a received job without a verdict is an orphan at the next start."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp)
        said: dict[str, dict[str, int]] = {}
        for step in steps:
            if step[0] == "restart":
                spool.close()
                spool = Spool(tmp)
                continue
            job, kind = f"j{step[0]}", str(step[1])
            spool.first_sight(job)
            item = spool.append(_payload, "t/events", kind, job)
            spool.ack(item.seq)  # the broker has it: it leaves pending, not what the node said
            if kind in LIFECYCLE:
                said.setdefault(job, {}).setdefault(kind, item.seq)
        for job, kinds in said.items():
            again = spool.job_events(job)
            assert {p.kind: p.seq for p in again} == kinds
            assert all(p.payload == _payload(p.seq) for p in again) and [p.seq for p in again] == sorted(kinds.values())
        ended = {job for job, kinds in said.items() if set(kinds) & VERDICTS}
        seen = {f"j{s[0]}" for s in steps if s[0] != "restart"}
        assert set(spool.unended()) == seen - ended
        assert spool.pending() == []
        spool.close()


def test_forgotten_job_ids_take_what_was_said_about_them_along(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_seen_jobs=2)
    for i, job in enumerate(("j1", "j2", "j3")):
        spool.first_sight(job, now=i)
        spool.append(_payload, "t/events", "finished", job)
    assert spool.job_events("j1") == [] and [p.kind for p in spool.job_events("j3")] == ["finished"]
    spool.close()


def test_jobs_received_before_the_spool_kept_job_events_are_not_orphans(tmp_path: Path) -> None:
    """An agent upgraded onto a spool written by an older one does not call every job it remembers unended."""
    spool = Spool(tmp_path)
    spool.first_sight("old")
    spool._db.execute("DROP TABLE job_events")  # the older agent's file: no such table, no mark
    spool._db.execute("DELETE FROM meta WHERE key = 'job_events_since'")
    spool.close()
    spool = Spool(tmp_path)
    spool.first_sight("new")
    assert spool.unended() == ["new"]
    spool.close()


# A spool whose file stops taking writes (a full disk) and takes them again: (op, arg).
troubled = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.tuples(st.integers(0, 3), st.sampled_from(JOB_KINDS))),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("disk"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(troubled)
def test_a_spool_that_cannot_write_holds_events_in_memory_and_writes_them_when_it_can(
    steps: list[tuple[str, object]],
) -> None:
    """Nothing is lost while the file refuses writes (pending and what was said about each job stay whole), the
    trouble is named, and once the file takes writes again everything held is on disk, across a restart."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp)
        unacked: list[int] = []
        said: dict[str, dict[str, int]] = {}
        for op, arg in steps:
            if op == "append":
                index, kind = arg  # type: ignore[misc]
                job = f"j{index}"
                spool.first_sight(job)
                item = spool.append(_payload, "t/events", kind, job)
                unacked.append(item.seq)
                if kind in LIFECYCLE:
                    said.setdefault(job, {}).setdefault(kind, item.seq)
            elif op == "ack" and unacked:
                spool.ack(unacked.pop(int(arg) % len(unacked)))  # type: ignore[call-overload]
            elif op == "disk":
                spool._db.execute(f"PRAGMA query_only = {'ON' if arg else 'OFF'}")  # ON: every write fails
            assert [p.seq for p in spool.pending()] == sorted(unacked) and len(spool) == len(unacked)
            assert all({p.kind: p.seq for p in spool.job_events(j)} == k for j, k in said.items())
        spool._db.execute("PRAGMA query_only = OFF")
        assert spool.flush() and spool.trouble == ""
        spool.close()
        spool = Spool(tmp)
        assert [p.seq for p in spool.pending()] == sorted(unacked)
        assert all({p.kind: p.seq for p in spool.job_events(j)} == k for j, k in said.items())
        assert all(not spool.first_sight(j) for j in said)
        spool.close()


def test_a_spool_that_cannot_write_says_why(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool._db.execute("PRAGMA query_only = ON")
    spool.append(_payload, "t/events", "finished", "j1")
    assert "readonly" in spool.trouble and not spool.flush()
    assert spool.first_sight("j2") and not spool.first_sight("j2")  # remembered in memory meanwhile
    spool._db.execute("PRAGMA query_only = OFF")
    assert spool.flush() and spool.trouble == ""
    spool.close()


def test_job_ids_are_trimmed_in_batches_to_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_seen_jobs=100)
    for i in range(250):
        assert spool.first_sight(f"j{i}", now=i)
        kept = spool._db.execute("SELECT count(*) FROM seen_jobs").fetchone()[0]
        assert kept <= 110  # at most a tenth over the bound between two trims
    assert all(not spool.first_sight(f"j{i}", now=300) for i in range(150, 250))  # the newest 100 are known
    assert spool.first_sight("j0", now=301)  # the oldest were forgotten
    spool.close()
    assert Spool(tmp_path, max_seen_jobs=100)._seen <= 110  # the count survives a restart
