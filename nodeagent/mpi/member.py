"""What a member node runs for a cluster job: wait for the leader's launch, then become the MPI daemon.

Started by the runner as the job's process (as the jobs user, in the job's own session, in the job directory),
so the daemon and the ranks it starts are held, frozen, cancelled and accounted like any job. The agent writes
``launch.json`` (the checked argv) when it accepts the leader's launch request; this process then execs it.
Exit status 3: no launch came within the time given as the only argument.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nodeagent.mpi.cluster_kind import LAUNCH_FILE, NO_LAUNCH_EXIT

POLL_S = 0.05


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    timeout_s = float(args[0]) if args else 300.0
    launch = Path(LAUNCH_FILE)
    deadline = time.monotonic() + timeout_s
    while not launch.exists():
        if time.monotonic() > deadline:
            print(f"no launch request from the leader within {timeout_s:g} s", file=sys.stderr)
            return NO_LAUNCH_EXIT
        time.sleep(POLL_S)
    daemon = json.loads(launch.read_text())["argv"]
    sys.stdout.flush()
    os.execvp(daemon[0], daemon)


if __name__ == "__main__":
    sys.exit(main())
