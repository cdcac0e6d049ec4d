"""CPU cost of one hardware tick on a recorded CM5 tree: every fast sensor, no process spawned.

    python3 bench/tick_cost.py [--reads 2000] [--repeats 7]

Times ``RealBackend.read()`` on tests/data/sysfs/cm5-nanocluster (temperature, frequency, governor, throttle,
under-voltage, memory, load, fan, NVMe temperature, PCIe links and AER every 5 s) with ``time.process_time``,
plus the simulator's read and the conversion to telemetry and msgpack, all in one run. The PMIC (a vcgencmd
process every 10 s) and the SMART log (an ioctl every 60 s) are outside the per-tick path and not included.
A tick that starts a process is counted and must be zero.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent.hw import RealBackend, SimBackend, SimConfig  # noqa: E402
from nodeagent.node.telemetry import telemetry_from  # noqa: E402
from nodeagent.protocol import encode  # noqa: E402

TREE = REPO / "tests" / "data" / "sysfs" / "cm5-nanocluster"


def per_call_ms(fn, reads: int, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for i in range(reads):
            fn(i)
        runs.append((time.process_time() - start) / reads * 1000)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    # No vcgencmd here: the PMIC is not on the per-tick path (and is absent on this machine).
    real = RealBackend(TREE, vcgencmd="/nonexistent/vcgencmd")
    sim = SimBackend("n1", SimConfig(), lambda: 2.0)
    spawned = []
    original = subprocess.Popen.__init__

    def spy(self, *a, **kw):  # type: ignore[no-untyped-def]
        spawned.append(a[0] if a else kw.get("args"))
        original(self, *a, **kw)

    real.read(0.0)  # first read: discovery done, absent sensors reported (the one vcgencmd attempt)
    subprocess.Popen.__init__ = spy  # type: ignore[method-assign]
    # Ticks 1 s apart, so PCIe is re-read every fifth tick as on a node.
    sample = real.read(99999.0)
    results = {
        "RealBackend.read (recorded CM5)": per_call_ms(lambda i: real.read(1.0 + i), args.reads, args.repeats),
        "SimBackend.read": per_call_ms(lambda i: sim.read(1.0 + i), args.reads, args.repeats),
        "telemetry_from + msgpack encode": per_call_ms(
            lambda i: encode(telemetry_from("n1", i, sample, None)), args.reads, args.repeats
        ),
    }
    subprocess.Popen.__init__ = original  # type: ignore[method-assign]
    print(
        f"# tick cost, {args.reads} reads x {args.repeats} runs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"# {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}")
    print("| what | median ms per tick | min | max |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(runs):.3f} | {min(runs):.3f} | {max(runs):.3f} |")
    print(f"processes started during the ticks: {len(spawned)}")
    return 0 if not spawned else 1


if __name__ == "__main__":
    sys.exit(main())
