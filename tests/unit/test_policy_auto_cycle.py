"""The automatic power-cycle: when it tries, how often, when it gives up, and whom it never touches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodeagent.policy.auto_cycle import CycleDecision, CycleTrack, auto_cycle
from nodeagent.policy.config import AutoCycleConfig

ON = AutoCycleConfig(enabled=True, offline_after_s=60.0, backoff_s=30.0, max_tries=3)
SLOTS = {"n1": 1, "n2": 2, "n3": 3}


def run(timeline: list[tuple[float, dict[str, bool]]], cfg: AutoCycleConfig = ON) -> list[tuple[float, CycleDecision]]:
    tracks: dict[str, CycleTrack] = {}
    out = []
    for now, online in timeline:
        tracks, decisions = auto_cycle(online, SLOTS, tracks, cfg, now, own_slot=1)
        out.extend((now, d) for d in decisions)
    return out


def offline_for(node: str, seconds: int) -> list[tuple[float, dict[str, bool]]]:
    return [(float(t), {node: False}) for t in range(seconds)]


def test_tries_after_the_delay_backs_off_doubling_and_gives_up_once() -> None:
    got = run(offline_for("n3", 400))
    assert [(t, d.kind, d.attempt) for t, d in got] == [
        (60.0, "cycle", 1),
        (90.0, "cycle", 2),  # 30 s after the first
        (150.0, "cycle", 3),  # 60 s after the second
        (270.0, "give_up", 3),  # the third try's 120 s have passed
    ]
    assert all(d.slot == 3 and d.node == "n3" for _, d in got)


def test_coming_back_online_resets_the_count() -> None:
    timeline = [*offline_for("n2", 100), (100.0, {"n2": True}), *[(100.0 + t, {"n2": False}) for t in range(1, 100)]]
    attempts = [(t, d.attempt) for t, d in run(timeline)]
    assert attempts[0] == (60.0, 1)
    assert (161.0, 1) in attempts  # a new episode starts from try 1, 60 s after it went offline again


def test_never_its_own_slot_an_unknown_slot_or_when_disabled() -> None:
    assert run(offline_for("n1", 1000)) == []  # the driver's own slot
    assert run(offline_for("n9", 1000)) == []  # no slot known
    assert run(offline_for("n3", 1000), AutoCycleConfig(enabled=False)) == []


@given(
    st.lists(st.tuples(st.floats(0.1, 50.0), st.booleans()), max_size=200),
    st.integers(1, 5),
    st.floats(1.0, 100.0),
)
def test_at_most_max_tries_per_offline_spell_and_never_an_online_node(
    steps: list[tuple[float, bool]], max_tries: int, backoff: float
) -> None:
    cfg = AutoCycleConfig(enabled=True, offline_after_s=10.0, backoff_s=backoff, max_tries=max_tries)
    now, timeline = 0.0, []
    for dt, online in steps:
        now += dt
        timeline.append((now, {"n2": online}))
    decisions = dict(run(timeline, cfg))
    tries_in_spell, last_try = 0, None
    for t, online in timeline:
        if online["n2"]:
            assert t not in decisions, "cycled a node that is online"
            tries_in_spell, last_try = 0, None
        elif t in decisions and decisions[t].kind == "cycle":
            tries_in_spell += 1
            assert tries_in_spell <= max_tries
            if last_try is not None:  # the back-off before try k is backoff × 2^(k-2)
                assert t - last_try >= backoff * 2 ** (tries_in_spell - 2) - 1e-6
            last_try = t
