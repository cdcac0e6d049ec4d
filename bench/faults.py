"""The fault suite's chaos run at full size (issue 14): 10 agents, 100 jobs, the broker SIGKILLed 20 times, agents
10 times, piclusterctl 3 times mid-run; then 0 results lost, 0 jobs run twice, one verdict per node, the
history complete (tests/faults/chaos.py does the run and the checks; tests/faults/test_chaos.py runs the short
profile in `make test`).

    .venv/bin/python bench/faults.py [--profile long|short] [--seed N] [--json FILE] [--keep]

Prints the machine, the date, the seed and what happened (jobs, kills, duration, node runs by verdict, the
reasons of every ending other than finished) and every problem found; exits 1 when there is one. Replay a run
with its seed. ``--keep`` leaves the work directory (agents' logs and run records, the broker's log, the
history) for a look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.chaos import LONG, SHORT, Chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("long", "short"), default="long")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a random seed, printed)")
    parser.add_argument("--json", metavar="FILE", help="also write the outcome as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    profile = LONG if args.profile == "long" else SHORT
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    work = Path(tempfile.mkdtemp(prefix="picluster-faults-"))
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.freedesktop_os_release().get('PRETTY_NAME')}"
    print(f"# chaos {profile.name}: {machine}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    os.environ.setdefault("XDG_DATA_HOME", str(work / "xdg"))  # piclusterctl's default files stay in here
    try:
        with Chaos(profile, seed, work, f"faults{seed % 100000}", log=lambda line: print(f"# {line}")) as chaos:
            outcome = chaos.run()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(outcome.summary())
    print("| verdict | node runs |\n|---|---|")
    for verdict, count in sorted(outcome.verdicts.items()):
        print(f"| {verdict} | {count} |")
    for reason, count in sorted(outcome.reasons.items()):
        print(f"  {count:3d} x {reason}")
    for problem in outcome.problems:
        print(f"PROBLEM: {problem}")
    if args.keep:
        print(f"# kept {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    return 1 if outcome.problems else 0


if __name__ == "__main__":
    sys.exit(main())
