"""The wall clock jumps an hour while jobs run, for the agent only (the machine's clock is never touched):
Debian's libfaketime preloaded into the agent, its offset changed at run time through FAKETIME_TIMESTAMP_FILE
(FAKETIME_NO_CACHE=1: read at every call). FAKETIME_DONT_FAKE_MONOTONIC=1 leaves CLOCK_MONOTONIC alone, as a
real clock step (NTP, an RTC-less Pi setting its clock late) does: only CLOCK_REALTIME moves. (libfaketime 0.9.10
mishandles Python's monotonic sleeps under that option: faketime_site/sitecustomize.py works around it.)

A job inside its time limit is not timed out by a jump forward, a job past it is timed out all the same after a
jump back, and telemetry keeps flowing, stamped with the jumped clock (proof that the jump reached the agent)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.protocol import Telemetry, decode
from tests.conftest import AgentFactory, Mosquitto, ctl, paho_env
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")  # the agent has threads: MT
SITE = Path(__file__).resolve().parent / "faketime_site"
NAP = """
[[jobs.template]]
name = "nap"
argv = ["sleep", "{seconds}"]
heavy = false
timeout_s = 10
[jobs.template.params.seconds]
type = "float"
"""


def _later(delay_s: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay_s, action)
    timer.start()
    return timer


def _stamps(w: Watcher, since: int) -> list[float]:
    """The wall-clock stamps of the node's telemetry after the first ``since`` messages seen."""
    tele = [m for m in w.seen if m.topic == w.topics.telemetry("n1") and not m.retained]
    return [decode(m.payload, Telemetry).t for m in tele[since:]]


def test_a_clock_jump_times_out_no_job_wrongly_and_telemetry_flows(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing: run `make setup` (apt install faketime)")
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    env = {
        "PYTHONPATH": f"{SITE}{os.pathsep}{paho_env(None)['PYTHONPATH']}",
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    agents.start("n1", config=NAP, env=env)
    with Watcher(broker.url, cluster) as w:
        w.wait("online", lambda: w.online("n1"))
        # Forward: a 6 s job (limit 10 s) with the clock an hour ahead 2 s in.
        seen = len([m for m in w.seen if m.topic == w.topics.telemetry("n1")])
        timer = _later(2.0, lambda: offset.write_text("+1h\n"))
        try:
            ahead = ctl(broker, cluster, "run", "nap", "--nodes", "n1", "--set", "seconds=6", "--json")
        finally:
            timer.cancel()
        w.pump(0.5)
        stamps = _stamps(w, seen)
        # Back: a 30 s job (limit 10 s) with the clock an hour behind 2 s in.
        seen = len([m for m in w.seen if m.topic == w.topics.telemetry("n1")])
        timer = _later(2.0, lambda: offset.write_text("-1h\n"))
        t0 = time.monotonic()
        try:
            behind = ctl(broker, cluster, "run", "nap", "--nodes", "n1", "--set", "seconds=30", "--json")
        finally:
            timer.cancel()
        took = time.monotonic() - t0
        w.pump(0.5)
        back = _stamps(w, seen)
    (node,) = json.loads(ahead.stdout)["runs"]
    assert node["state"] == "finished" and node["passed"], node
    assert 5.5 < node["result"]["elapsed_s"] < 8.0  # measured on the monotonic clock
    assert len(stamps) >= 8, "telemetry stopped"  # every 0.5 s for 6 s
    assert stamps[0] < time.time() + 60 and stamps[-1] > time.time() + 3000, "the jump did not reach the agent"
    (node,) = json.loads(behind.stdout)["runs"]
    assert node["state"] == "failed" and "timed out after 10 s" in node["reason"], node
    assert took < 20, f"the 10 s limit held for {took:.0f} s"
    assert len(back) >= 12 and back[-1] < time.time() - 3000
