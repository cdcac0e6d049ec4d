"""Reaction time of the node's safety: from the tick whose sample crosses a threshold to the fan command.

    python3 bench/reaction.py [--trials 200]

Runs the simulator under full load with its fan stopped, and with the fan curve and thermal guard in charge
(``NodeSafety`` with the simulator's fan, as the agent runs them), on simulated time. Each trial starts from a
different ambient temperature (25-40 °C), so the crossing falls at a different point. For every trial it
reports how many ticks passed between the first sample at or above ``warm_c`` and the first tick whose fan
command was 100 %, and likewise from ``hot_c`` to the job being frozen. It also times ``NodeSafety.tick`` (the
decision and the command) with ``time.process_time``. The target is at most one tick.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.hw import SimBackend, SimConfig
from nodeagent.hw.fans.sim import SimFan
from nodeagent.node.safety import NodeSafety
from nodeagent.policy import PolicyConfig


def trial(ambient_c: float) -> tuple[int, int]:
    frozen = False
    sim = SimBackend(
        "n1", SimConfig(ambient_c=ambient_c, faults=("fan_stop",), temp_noise_c=0.0), lambda: 0.0 if frozen else 4.0
    )
    fan = SimFan(sim)
    safety = NodeSafety(PolicyConfig(), [fan])
    guard = safety.policy.guard
    warm_at = full_at = hot_at = frozen_at = None
    for t in range(7200):
        sample = sim.read(float(t))
        tick = safety.tick(sample, float(t))
        frozen = tick.freeze_job
        if warm_at is None and sample.temp_c is not None and sample.temp_c >= guard.warm_c:
            warm_at = t
        if full_at is None and fan.duty_pct == 100.0:
            full_at = t
        if hot_at is None and sample.temp_c is not None and sample.temp_c >= guard.hot_c:
            hot_at = t
        if frozen_at is None and tick.freeze_job:
            frozen_at = t
        if frozen_at is not None and full_at is not None:
            break
    assert None not in (warm_at, full_at, hot_at, frozen_at)
    return full_at - warm_at, frozen_at - hot_at  # type: ignore[operator]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    fan_lag, freeze_lag = [], []
    for i in range(args.trials):
        a, b = trial(25.0 + 15.0 * i / args.trials)  # from 25 °C: a cooler room never reaches hot_c
        fan_lag.append(a)
        freeze_lag.append(b)
    sim = SimBackend("n1", SimConfig(), lambda: 2.0)
    safety = NodeSafety(PolicyConfig(), [SimFan(sim)])
    samples = [sim.read(float(t)) for t in range(2000)]
    start = time.process_time()
    for t, sample in enumerate(samples):
        safety.tick(sample, float(t))
    tick_us = (time.process_time() - start) / len(samples) * 1e6
    print(
        f"# reaction, {args.trials} trials, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"Python {platform.python_version()}"
    )
    print(f"warm_c crossing -> fan command 100 %: max {max(fan_lag)} ticks, median {statistics.median(fan_lag)}")
    print(f"hot_c crossing -> job frozen:        max {max(freeze_lag)} ticks, median {statistics.median(freeze_lag)}")
    print(f"NodeSafety.tick (decide + command one fan): {tick_us:.1f} µs CPU")
    return 0 if max(fan_lag) <= 1 and max(freeze_lag) <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
