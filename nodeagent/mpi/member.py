"""What a member node runs for a cluster job: wait for the leader's launch, then become the MPI daemon.

Started by the runner as the job's process (as the jobs user, in the job's own session, in the job directory),
so the daemon and the ranks it starts are held, frozen, cancelled and accounted like any job. The agent writes
``launch.json`` (the checked argv) into the job's control directory, which this process may read and not write,
when it accepts the leader's launch request; this process then execs it.

Usage: ``python -m nodeagent.mpi.member TIMEOUT_S CONTROL_DIR``. Exit status 3: no launch came in time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from nodeagent.mpi.control import LAUNCH_FILE, NO_LAUNCH_EXIT, read_json

POLL_S = 0.05


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    timeout_s = float(args[0]) if args else 300.0
    launch = Path(args[1] if len(args) > 1 else ".") / LAUNCH_FILE
    deadline = time.monotonic() + timeout_s
    while (daemon := (read_json(launch) or {}).get("argv")) is None:
        if time.monotonic() > deadline:
            print(f"no launch request from the leader within {timeout_s:g} s", file=sys.stderr)
            return NO_LAUNCH_EXIT
        time.sleep(POLL_S)
    if not isinstance(daemon, list) or not daemon or not all(isinstance(w, str) for w in daemon):
        print(f"{launch}: no daemon command line in it", file=sys.stderr)
        return NO_LAUNCH_EXIT
    sys.stdout.flush()
    os.execvp(daemon[0], daemon)


if __name__ == "__main__":
    sys.exit(main())
