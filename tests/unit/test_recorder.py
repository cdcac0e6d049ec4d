"""The run recorder keeps every node's telemetry bounded without losing what a thermal plot is for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.recorder import MAX_PER_NODE, MIN_PER_NODE, Recorder, merge, per_node_limit
from controller.session import Received
from nodeagent.protocol import Telemetry, Topics, encode
from nodeagent.protocol.throttle import THROTTLED, now_and_since, throttled_now


def _t(node: str, i: int, temp: float, *, throttled: int = 0, freq: float = 2400.0, power: float = 5.0) -> Telemetry:
    return Telemetry(
        node=node, seq=i, t=1000.0 + i, temp_c=temp, freq_mhz=freq, power_w=power, throttled=throttled, fan_rpm=i
    )


def test_the_limit_per_node_shares_a_total_and_stays_in_bounds() -> None:
    assert per_node_limit(1) == MAX_PER_NODE
    assert per_node_limit(1050) >= MIN_PER_NODE
    assert per_node_limit(1050) * 1050 <= 100_000 or per_node_limit(1050) == MIN_PER_NODE


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=4 * MAX_PER_NODE),
    blip=st.integers(min_value=0, max_value=4 * MAX_PER_NODE - 1),
)
def test_a_long_run_is_kept_whole_bounded_in_order_with_every_throttle_and_peak(count: int, blip: int) -> None:
    rec = Recorder(("a",))
    blip %= count
    for i in range(count):
        hot = i == blip
        rec.feed(
            "a",
            _t(
                "a",
                i,
                90.0 if hot else 50.0,
                throttled=now_and_since(THROTTLED) if hot else 0,
                freq=1500.0 if hot else 2400.0,
            ),
        )
    rows = rec.samples["a"]
    assert 1 <= len(rows) <= MAX_PER_NODE
    times = [r["t"] for r in rows]
    assert times == sorted(times) and times[-1] == 1000.0 + count - 1  # the end of the run is there
    assert times[0] <= 1000.0 + max(1, count // 2)  # and its start, however coarse the step
    # The one throttled, hot, slow sample survives every merge.
    assert sum(throttled_now(r["throttled"]) for r in rows) == 1
    assert max(r["temp_c"] for r in rows) == 90.0 and min(r["freq_mhz"] for r in rows) == 1500.0
    s = rec.summary()
    assert s["throttled"] == {"a": True} and s["temp_peak_c"] == 90.0 and s["power_avg_w"] == 5.0


def test_merge_keeps_the_extremes_and_the_later_time() -> None:
    a = {"t": 1.0, "temp_c": 60.0, "freq_mhz": 1800.0, "freq_cap_mhz": None, "throttled": 0x4, "power_w": 9.0,
         "fan_duty_pct": 80.0, "fan_rpm": None, "guard": "hot", "job": "j"}  # fmt: skip
    b = {"t": 2.0, "temp_c": 55.0, "freq_mhz": 2400.0, "freq_cap_mhz": 2000.0, "throttled": 0x10000,
         "power_w": 7.0, "fan_duty_pct": 60.0, "fan_rpm": 3000, "guard": "warm", "job": "j"}  # fmt: skip
    m = merge(a, b)
    assert m["t"] == 2.0 and m["temp_c"] == 60.0 and m["freq_mhz"] == 1800.0 and m["freq_cap_mhz"] == 2000.0
    assert m["throttled"] == 0x10004 and m["power_w"] == 9.0 and m["fan_rpm"] == 3000 and m["guard"] == "hot"


def test_the_tap_takes_live_telemetry_of_the_jobs_nodes_only() -> None:
    topics = Topics("c")
    rec = Recorder(("a",))
    rec.tap(topics, Received(topics.telemetry("a"), encode(_t("a", 1, 40.0)), retained=True))  # before the run
    rec.tap(topics, Received(topics.telemetry("a"), encode(_t("a", 2, 41.0)), retained=False))
    rec.tap(topics, Received(topics.telemetry("b"), encode(_t("b", 2, 99.0)), retained=False))  # not in the job
    rec.tap(topics, Received(topics.telemetry("a"), b"\xc1 not msgpack", retained=False))  # malformed: left out
    rec.tap(topics, Received(topics.events("a"), b"", retained=False))
    assert [r["temp_c"] for r in rec.samples["a"]] == [41.0] and "b" not in rec.samples


def test_a_run_subscribes_to_its_nodes_telemetry_alone_and_records_only_what_comes_live() -> None:
    topics = Topics("c")
    rec = Recorder(("n1", "n3"))
    assert rec.topics(topics) == (topics.telemetry("n1"), topics.telemetry("n3"))
    for msg in [
        Received(topics.telemetry("n1"), encode(_t("n1", 1, 50.0)), True),  # the retained copy a subscription brings
        Received(topics.telemetry("n1"), b"\xc1 not even msgpack", False),  # left out, not fatal
        Received(topics.telemetry("n1"), encode(_t("n1", 2, 61.0)), False),
    ]:
        rec.tap(topics, msg)
    assert [r["temp_c"] for r in rec.samples["n1"]] == [61.0]  # the run's own samples only
