"""``plot``'s figure from a recorded run: a line per node and panel, throttled samples crossed and shaded, the cap
dashed; a job without telemetry is refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from controller.history import JobRecord
from controller.plot import LEGEND_MAX, PlotError, build_figure, throttle_spans

THROTTLED_NOW = 0x50004  # throttled now (bit 2), and its sticky twins


def _rows(node: int, count: int, *, hot: range = range(0), cap_from: int | None = None) -> list[dict[str, Any]]:
    return [
        {"t": 100.0 + i, "temp_c": 50.0 + node + (20 if i in hot else 0), "freq_mhz": 1500.0 if i in hot else 2400.0,
         "freq_cap_mhz": 1800.0 if cap_from is not None and i >= cap_from else None,
         "throttled": THROTTLED_NOW if i in hot else 0x10000,  # the sticky bit alone is not "throttled now"
         "power_w": 6.0, "fan_duty_pct": None, "fan_rpm": 3000 + i, "guard": "normal", "job": "j"}
        for i in range(count)
    ]  # fmt: skip


def _job(telemetry: dict[str, Any] | None) -> JobRecord:
    result = {"telemetry": telemetry} if telemetry is not None else {"gflops": 1.0}
    return JobRecord("hpl-x", "c", "hpl", 0.0, {}, {}, sorted(telemetry or {}), {}, result, [])


def test_throttled_samples_are_crossed_and_shaded_and_the_cap_is_drawn() -> None:
    fig = build_figure(_job({"a": _rows(1, 30, hot=range(10, 15)), "b": _rows(2, 30, cap_from=20)}))
    temp, freq, power, fan = fig.axes
    crosses = {c.get_gid(): c.get_offsets().tolist() for c in temp.collections}
    assert crosses == {"throttled:a": [[float(i), 71.0] for i in range(10, 15)]}
    assert [c.get_offsets().tolist() for c in freq.collections] == [[[float(i), 1500.0] for i in range(10, 15)]]
    spans = [p for p in power.patches if p.get_gid() == "throttle-span:a"]
    assert len(spans) == 1
    xs = [x for x, _ in spans[0].get_xy()]
    assert (min(xs), max(xs)) == (10.0, 15.0)  # from the first throttled sample to the next unthrottled one
    lines = {line.get_gid(): line for line in freq.get_lines()}
    assert list(lines["freq_cap_mhz:b"].get_xdata()) == [float(i) for i in range(20, 30)]
    assert "freq_cap_mhz:a" not in lines
    assert fan.get_ylabel() == "fan (rpm)"  # no node reports a duty: the speed is drawn
    assert "throttled (×): a" in fig._suptitle.get_text()
    assert temp.get_legend() is not None


def test_many_nodes_get_no_legend() -> None:
    fig = build_figure(_job({f"n{i}": _rows(i, 3) for i in range(LEGEND_MAX + 1)}))
    assert fig.axes[0].get_legend() is None and len(fig.axes[0].get_lines()) == LEGEND_MAX + 1


@pytest.mark.parametrize("telemetry", [None, {}, {"a": []}])
def test_no_telemetry_is_refused_by_name(telemetry: dict[str, Any] | None) -> None:
    with pytest.raises(PlotError, match="job hpl-x has no recorded telemetry"):
        build_figure(_job(telemetry))


def test_spans_join_consecutive_throttled_samples() -> None:
    rows = _rows(0, 10, hot=range(2, 4))
    rows[7]["throttled"] = THROTTLED_NOW
    rows[9]["throttled"] = THROTTLED_NOW
    assert throttle_spans(rows, 100.0) == [(2.0, 4.0), (7.0, 8.0), (9.0, 10.0)]
