"""What one `piclusterctl top` frame costs for N nodes: building the lines, choosing the layout that fits and
rendering it, next to rendering the same fleet as `piclusterctl nodes` does (its table, one row per node).

    python3 bench/top_frame.py [--nodes 100 1050] [--runs 30]

The fleet is synthetic telemetry shaped like a cluster mid-HPL (tests/unit/test_top_view.py's ``realistic``):
most nodes busy and warm, some idle, one hot and throttling, two stale, every 37th offline. Each figure is the
median (and p95) over ``--runs`` renders into a recording console (no terminal I/O). Prints the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from controller import top_view  # noqa: E402
from controller.fleet import NodeView  # noqa: E402
from controller.report import nodes_table  # noqa: E402
from tests.unit.test_top_view import NOW, realistic, telemetry  # noqa: E402


def timed(fn: Callable[[], None], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def top(console: Console, n: int, width: int, height: int, layouts: list[str]) -> None:
    """Everything a frame takes: the lines from telemetry, the layout that fits, the rendering."""
    frame, layout = top_view.frame(realistic(n), console=console, width=width, height=height, title="top")
    console.print(frame)
    console.export_text()
    layouts.append(layout)


def nodes(console: Console, views: list[NodeView]) -> None:
    console.print(nodes_table(views, NOW))
    console.export_text()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1050])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    print(f"# top_frame.py on {platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}), "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {args.runs} runs each")  # fmt: skip
    print("| nodes | console | top layout | top frame median (ms) | p95 (ms) | nodes table median (ms) | ratio |")
    print("|---:|---|---|---:|---:|---:|---:|")
    with open(os.devnull, "w") as sink:
        for n in args.nodes:
            views = [NodeView(f"node{i}", "online", None, telemetry(f"node{i}", temp=50.0)) for i in range(1, n + 1)]
            for width, height in ((80, 24), (120, 40)):
                console = Console(record=True, width=width, height=height, color_system=None, file=sink)
                layouts: list[str] = []
                med, p95 = timed(partial(top, console, n, width, height, layouts), args.runs)
                peer, _ = timed(partial(nodes, console, views), args.runs)
                cells = (n, f"{width}x{height}", layouts[-1], f"{med:.1f}", f"{p95:.1f}", f"{peer:.1f}")
                print("| " + " | ".join(str(cell) for cell in cells) + f" | {med / peer:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
