"""Everything the agent keeps about what it receives is bounded (issue 12): its inbox, the tables keyed by names
that come from topics or message bodies, and what its spool keeps per id. The whole agent under a flood is
tests/security/test_fuzz.py."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.mqtt.inbox import BoundedInbox
from nodeagent.mqtt.spool import Spool
from nodeagent.node.safety import OVERFLOW, ChassisView, plausible_power
from nodeagent.node.slot_power import MAX_WAITING, SlotPower
from nodeagent.policy import PolicyConfig
from nodeagent.policy.chassis import ChassisSelf, ChassisState, chassis_duty
from nodeagent.policy.config import AutoCycleConfig, ChassisConfig
from nodeagent.protocol import Command, Telemetry


def is_peer(topic: str) -> bool:
    return topic.startswith("peer/")


def drain(inbox: BoundedInbox) -> list[tuple[object, ...]]:
    out = []
    while True:
        try:
            out.append(inbox.get(0))
        except queue.Empty:
            return out


def test_the_agents_own_items_then_commands_then_other_nodes() -> None:
    inbox = BoundedInbox(is_peer)
    inbox.put(("message", "peer/a", b"1", False))
    inbox.put(("message", "cmd", b"c1", False))
    inbox.put(("connected",))
    inbox.put(("message", "cmd", b"c2", False))
    assert [item[0] if item[0] != "message" else item[2] for item in drain(inbox)] == [
        "connected",
        b"c1",
        b"c2",
        b"1",
    ]


def test_another_nodes_topic_keeps_its_latest_message_and_its_place_in_line() -> None:
    inbox = BoundedInbox(is_peer)
    for i in range(1000):  # a chatty node
        inbox.put(("message", "peer/a", str(i).encode(), False))
        inbox.put(("message", f"peer/n{i % 3}", str(i).encode(), False))
    got = [(item[1], item[2]) for item in drain(inbox)]
    assert got == [("peer/a", b"999"), ("peer/n0", b"999"), ("peer/n1", b"997"), ("peer/n2", b"998")]
    assert inbox.replaced == 2000 - 4 and not inbox.dropped


def test_commands_beyond_the_bound_and_oversize_payloads_are_dropped_and_counted() -> None:
    inbox = BoundedInbox(is_peer, max_commands=5, max_command_bytes=100, max_peer_topics=3, max_payload_bytes=50)
    for _ in range(8):
        inbox.put(("message", "cmd", b"x" * 10, False))
    inbox.put(("message", "cmd", b"y" * 51, False))
    for i in range(5):
        inbox.put(("message", f"peer/{i}", b"p", False))
    assert inbox.dropped == {"commands_full": 3, "oversize": 1, "peers_full": 2}
    assert len(drain(inbox)) == 5 + 3
    inbox.put(("message", "cmd", b"again", False))  # room again once taken
    assert drain(inbox)[0][2] == b"again"


def test_a_command_byte_budget_holds_whatever_the_count() -> None:
    inbox = BoundedInbox(is_peer, max_command_bytes=1000)
    for _ in range(10):
        inbox.put(("message", "cmd", b"z" * 300, False))
    assert len(drain(inbox)) == 3 and inbox.dropped["commands_full"] == 7


def test_an_own_item_put_while_the_lock_is_held_is_not_lost() -> None:
    """A signal handler runs on the loop's own thread, maybe while it holds the lock: it must neither wait nor lose
    the item (the loop finds it at its next look)."""
    inbox = BoundedInbox(is_peer)
    with inbox._ready:  # the loop thread inside get(), interrupted by SIGHUP
        inbox.put(("reload", None))
    assert inbox.get(0) == ("reload", None)


def test_get_waits_for_an_item_and_times_out_empty() -> None:
    inbox = BoundedInbox(is_peer)
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        inbox.get(0.05)
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, lambda: inbox.put(("message", "cmd", b"late", False))).start()
    assert inbox.get(5)[2] == b"late"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cmd", "peer/a", "peer/b", "peer/c"]), st.binary(max_size=40))))
def test_the_inbox_never_holds_more_than_its_bounds(messages: list[tuple[str, bytes]]) -> None:
    inbox = BoundedInbox(is_peer, max_commands=4, max_command_bytes=60, max_peer_topics=2, max_peer_bytes=50)
    for topic, payload in messages:
        inbox.put(("message", topic, payload, False))
        assert len(inbox._commands) <= 4 and inbox._command_bytes <= 60
        assert len(inbox._peers) <= 2 and inbox._peer_bytes <= 50
    taken = drain(inbox)
    assert len(taken) + sum(inbox.dropped.values()) + inbox.replaced == len(messages)


def test_a_full_chassis_view_turns_new_nodes_away_and_runs_the_fan_full() -> None:
    view = ChassisView("drv", ChassisConfig(), max_nodes=3)
    for i in range(5):
        view.telemetry(f"n{i}", Telemetry(f"n{i}", 1, 0.0, temp_c=40.0, power_w=5.0), retained=False, now=0, wall=0)
    nodes = view.nodes(1.0)
    assert set(nodes) == {"n0", "n1", "n2", OVERFLOW} and view.turned_away == 2
    duty, reasons, _ = chassis_duty(nodes, ChassisSelf(40.0, True), PolicyConfig(), ChassisState(), 1.0)
    assert duty == 100.0 and any(OVERFLOW in r for r in reasons)
    assert set(view.nodes(10.0)) == {"n0", "n1", "n2"}  # nobody turned away lately: back to the known nodes
    view.status("x", "offline", 11.0)  # a node never heard from: nothing to remember about it
    assert "x" not in view._offline_since


def test_a_power_reading_no_node_could_draw_counts_as_none() -> None:
    view = ChassisView("drv", ChassisConfig())
    for name, watts in (("ok", 9.5), ("huge", 1.2e19), ("negative", -3.0), ("nan", float("nan"))):
        view.telemetry(name, Telemetry(name, 1, 0.0, power_w=watts), retained=False, now=0, wall=0)
    assert {n: r.power_w for n, r in view.readings(0.0).items()} == {
        "ok": 9.5,
        "huge": None,
        "negative": None,
        "nan": None,
    }
    assert plausible_power(0.0) and not plausible_power(None)


def test_slot_power_tables_and_waiting_commands_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str, str]] = []
    gate = threading.Event()

    class SlowLines:  # each pulse waits until the test lets it go
        def act(self, action: str, slot: int) -> None:
            gate.wait(10)

        def close(self) -> None:
            pass

    monkeypatch.setattr("nodeagent.node.slot_power.MAX_NODES", 10)
    power = SlotPower(
        "drv",
        1,
        SlowLines,
        AutoCycleConfig(),
        lambda kind, job="", **f: events.append((kind, job, f.get("reason", ""))),
    )
    try:
        for i in range(50):
            power.status(f"n{i}", True)
            power.facts(f"n{i}", 2 + i % 6)
        assert len(power.online) == 10 and len(power.slots) == 10
        for i in range(MAX_WAITING + 5):
            power.command(Command(id=f"p{i}", cmd="power", value="cycle", slot=3, nodes=("drv",)))
        refused = [job for kind, job, _ in events if kind == "rejected"]
        assert len(refused) >= 4 and all("already waiting" in r for k, _, r in events if k == "rejected")
    finally:
        gate.set()
        power.close()


def test_the_spool_keeps_what_it_said_only_about_jobs_it_received(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.first_sight("job1")
    spool.append(lambda seq: b"a", "t", "accepted", "job1")
    for i in range(100):  # answers to commands whose ids anyone may choose
        spool.append(lambda seq: b"r", "t", "rejected", f"made-up-{i}")
    assert [p.kind for p in spool.job_events("job1")] == ["accepted"]
    assert spool.job_events("made-up-7") == []
    rows = spool._db.execute("SELECT count(*) FROM job_events").fetchone()[0]
    assert rows == 1
    spool.close()
