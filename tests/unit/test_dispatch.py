"""The controller's bookkeeping of one job: every node reaches an end, whatever the nodes do or fail to do."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from controller.dispatch import ENDED, NOT_SENT, Follower, NodeRun, catch_up
from controller.history import History, JobRecord, NodeRecord
from controller.jobs_cli import RESEND_AFTER_S, resync
from controller.select import SelectionError, fold, select
from controller.session import Received
from nodeagent.protocol import Command, Event, JobSpec, Topics, decode, encode

T = Topics("c")


def ev(node: str, seq: int, kind: str, job: str = "j1", **fields: object) -> Received:
    return Received(T.events(node), encode(Event(node=node, seq=seq, t=0.0, kind=kind, job=job, **fields)), False)


def follower(*nodes: str) -> Follower:
    return Follower(T, "j1", nodes, started=100.0, timeout_s=60.0, accept_timeout_s=15.0)


def test_a_full_lifecycle() -> None:
    f = follower("a")
    f.apply(ev("a", 1, "accepted", data={"plan": {"n": 100}}))
    assert f.runs["a"].plan == {"n": 100} and not f.done
    f.apply(ev("a", 2, "started"))
    f.apply(ev("a", 3, "progress", progress=0.5, phase="HPL"))
    assert (f.runs["a"].state, f.runs["a"].progress, f.runs["a"].phase) == ("running", 0.5, "HPL")
    f.apply(ev("a", 4, "finished", result={"gflops": 1.0, "passed": True}))
    assert f.done and f.runs["a"].passed


def test_duplicates_other_jobs_and_garbage_change_nothing() -> None:
    f = follower("a")
    f.apply(ev("a", 5, "accepted"))
    assert f.apply(ev("a", 5, "failed", reason="dup")) is None  # same seq: a QoS 1 redelivery
    assert f.apply(ev("a", 6, "failed", job="other")) is None
    assert f.apply(Received(T.events("a"), b"\xc1", False)) is None
    assert f.apply(ev("zzz", 7, "failed")) is None  # not selected
    assert f.runs["a"].state == "accepted"


def test_offline_no_answer_and_timeout() -> None:
    f = follower("a", "b", "c")
    f.apply(Received(T.status("a"), b"offline", False))
    assert f.runs["a"].state == "offline" and "went offline" in f.runs["a"].reason
    f.apply(ev("b", 1, "accepted"))
    assert [r.node for r in f.expire(110.0)] == []
    assert [r.node for r in f.expire(116.0)] == ["c"] and f.runs["c"].state == "no-answer"
    assert [r.node for r in f.expire(100.0 + 60 + 31)] == ["b"] and f.runs["b"].state == "timeout"
    assert f.done


def test_an_ended_node_stays_ended() -> None:
    f = follower("a")
    f.apply(ev("a", 1, "rejected", reason="busy"))
    f.apply(ev("a", 2, "finished", result={"passed": True}))
    f.apply(Received(T.status("a"), b"offline", False))
    assert f.runs["a"].state == "rejected" and f.runs["a"].reason == "busy"


kinds = st.sampled_from(["accepted", "started", "progress", "finished", "failed", "rejected", "cancelled", "log"])


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), kinds, st.booleans()), max_size=30), st.floats(0, 1000))
def test_every_node_ends_by_the_deadline_whatever_arrives(script: list, late: float) -> None:
    f = follower("a", "b")
    for seq, (node, kind, offline) in enumerate(script, start=1):
        f.apply(Received(T.status(node), b"offline", False) if offline else ev(node, seq, kind))
    f.expire(100.0 + 60 + 30 + 1 + late)
    assert f.done and all(r.state in ENDED for r in f.runs.values())


def test_passed_needs_a_passed_result() -> None:
    assert NodeRun("a", state="finished", result={"passed": True}).passed
    assert not NodeRun("a", state="finished", result={"passed": False}).passed
    assert not NodeRun("a", state="failed").passed


def test_select() -> None:
    known = ["node10", "node2", "node1", "gpu1"]
    assert select("all", known) == ["gpu1", "node1", "node2", "node10"]
    assert select("node[1-2]", known) == ["node1", "node2"]
    assert select("node[1-10]!node[3-9]", ["node1", "node2", "node10"]) == ["node1", "node2", "node10"]
    for pattern, words in [("node[1-3]", "unknown node(s) node3"), ("n[1-", "missing bracket"), ("", "is empty")]:
        try:
            select(pattern, known)
        except SelectionError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(pattern)
    try:
        select("all", [])
    except SelectionError as exc:
        assert "same --cluster" in str(exc)
    assert fold(["n1", "n2", "n3", "x"]) == "n[1-3],x"


def test_a_refused_copy_of_the_job_is_not_the_verdict() -> None:
    f = follower("a")
    f.apply(ev("a", 1, "accepted"))
    dup = ev(
        "a", 2, "rejected", reason="duplicate: job j1 was already received", field="job.id", data={"duplicate": True}
    )
    assert f.apply(dup) is None and f.runs["a"].state == "accepted"
    f.apply(ev("a", 3, "finished", result={"gflops": 1.0, "passed": True}))
    assert f.done and f.runs["a"].passed


def test_queued_and_ready_are_followed_without_ending_the_run() -> None:
    f = follower("a", "b")
    f.apply(ev("a", 1, "accepted"))
    f.apply(ev("a", 2, "queued", data={"position": 2, "running": "x"}))
    assert (f.runs["a"].state, f.runs["a"].phase) == ("queued", "queued at position 2")
    f.apply(ev("b", 1, "accepted"))
    f.apply(ev("b", 2, "started"))
    f.apply(ev("b", 3, "ready", data={"address": "10.0.0.2:50052", "port": 50052}))
    assert f.runs["b"].state == "ready" and f.runs["b"].ready["address"] == "10.0.0.2:50052"
    assert not f.done and f.expire(130.0) == []  # neither is waiting for an answer any more


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), kinds, st.booleans(), st.floats(0, 0.5)), max_size=40),
)
def test_done_and_expire_follow_the_runs_as_a_full_scan_would(script: list) -> None:
    """done and expire keep the nodes still in the job as they end, instead of scanning every node each time."""
    f = follower("a", "b", "c")
    now = 100.0
    for seq, (node, kind, offline, step) in enumerate(script, start=1):
        f.apply(Received(T.status(node), b"offline", False) if offline else ev(node, seq, kind))
        now += step * 200  # crosses the accept deadline (115) and the verdict deadline (190) somewhere
        f.expire(now)
        assert f.done == all(r.ended for r in f.runs.values())
        if now > 115.0 + 0.1:
            assert not any(r.state == "submitted" for r in f.runs.values())


class _Session:
    """The part of a Session that catch_up and resync use: its connects, the commands it sends, nothing to read."""

    def __init__(self) -> None:
        self.topics = T
        self.client_id = "ctl"
        self.connects = 1
        self.commands: list[Command] = []

    def command(self, topic: str, cmd: Command) -> bytes:
        assert topic == T.cluster_cmd()
        self.commands.append(decode(encode(cmd), Command))
        return b""

    def refused_ours(self, event: Event) -> bool:
        return False

    def get(self, timeout_s: float) -> Received | None:
        return None


def test_after_a_reconnect_the_nodes_still_in_the_job_are_asked_to_say_it_again() -> None:
    session, f = _Session(), follower("a", "b", "c")
    f.apply(ev("a", 1, "accepted"))
    f.apply(ev("b", 1, "finished", result={"passed": True}))
    catch_up(session, f)  # type: ignore[arg-type]
    catch_up(session, f)  # type: ignore[arg-type]
    assert session.commands == []  # the first session: nothing was missed
    session.connects = 2  # the broker came back: what the nodes published meanwhile never reached us
    catch_up(session, f)  # type: ignore[arg-type]
    catch_up(session, f)  # type: ignore[arg-type]
    assert [(c.cmd, c.job_id, c.nodes) for c in session.commands] == [("resend", "j1", ("a", "c"))]


def test_results_asks_only_about_nodes_without_a_verdict_and_not_too_soon() -> None:
    """A node not heard from on a young job may not have its run command yet: asked now, it would refuse the
    job for good (never received), so it is asked only once the job is older than RESEND_AFTER_S."""
    runs = [
        NodeRecord("done", "finished"),
        NodeRecord("running", "running"),
        NodeRecord("silent", "submitted"),
        NodeRecord("guessed", "no-answer"),
        NodeRecord("away", "offline", NOT_SENT),
    ]
    job = JobRecord("j1", "c", "hpl", 1000.0, {}, {}, [r.node for r in runs], {}, None, runs)
    session = _Session()
    resync(session, [job], now=1000.0 + 1)  # type: ignore[arg-type]
    resync(session, [job], now=1000.0 + RESEND_AFTER_S + 1)  # type: ignore[arg-type]
    assert [c.nodes for c in session.commands] == [("running",), ("running", "silent", "guessed")]


# --- refusals of a command's signature ---------------------------------------------------------------------------


def refused(node: str, seq: int, digest: str, code: str = "unsigned") -> Received:
    return ev(node, seq, "rejected", reason="unsigned command refused", data={"auth": code, "digest": digest})


def test_a_refusal_of_our_command_ends_the_node_and_one_of_a_forged_copy_does_not() -> None:
    f = Follower(T, "j1", ["a", "b", "c"], started=100.0, timeout_s=60.0, sent={"ours"})
    assert f.apply(refused("a", 1, "someone-elses")) is None  # a forged copy's refusal: not our command
    run = f.apply(refused("b", 1, "ours"))
    assert run is not None and (run.state, run.auth, run.reason) == ("rejected", "unsigned", "unsigned command refused")
    f.apply(ev("c", 1, "accepted"))
    assert f.apply(refused("c", 2, "ours", "replayed")) is None  # a replay of ours refused, after ours was taken
    assert [f.runs[n].state for n in "abc"] == ["submitted", "rejected", "accepted"]


def test_the_history_never_takes_a_refused_signature_for_the_nodes_verdict(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite3")
    try:
        history.job_started(JobSpec(id="j1", kind="stress"), "c", ["a"], {}, {})
        forged = Event(node="a", seq=1, t=1.0, kind="rejected", job="j1", reason="x", data={"auth": "unsigned"})
        history.record_event(forged, "c")
        history.record_event(Event(node="a", seq=2, t=2.0, kind="finished", job="j1", result={"passed": True}), "c")
        (run,) = history.job("j1").runs  # type: ignore[union-attr]
        assert run.state == "finished"
    finally:
        history.close()
