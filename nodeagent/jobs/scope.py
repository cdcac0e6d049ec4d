"""A job in a transient systemd scope: its own cgroup, so systemd accounts for it, can cap it and kills all of it.

Used where systemd runs the machine (``/run/systemd/system`` exists, the test ``sd_booted()`` makes); elsewhere
the job runs plainly, in its own session, which the runner signals as a whole either way. ``systemd-run`` runs
as the agent (root) so it can create a system scope, and switches to the jobs user itself (``--uid``/``--gid``)
before it executes the job in place: the job keeps the PID and the session the runner started.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

SYSTEMD_DIR = "/run/systemd/system"


def systemd_running(marker: str = SYSTEMD_DIR) -> bool:
    """True when systemd is the init system (sd_booted(3) checks the same directory)."""
    return os.path.isdir(marker)


def unit_name(job_id: str) -> str:
    """``picluster-job-<id>.scope``; job ids are already unit-name safe except for '_' and '.', kept as is."""
    return f"picluster-job-{job_id}.scope"


def scope_argv(
    argv: Sequence[str],
    job_id: str,
    *,
    uid: int | None = None,
    gid: int | None = None,
    properties: Sequence[str] = (),
    systemd_run: str = "systemd-run",
) -> tuple[str, ...]:
    """``argv`` wrapped in ``systemd-run --scope``; ``--`` ends its options, so the job's argv is never parsed."""
    wrapped = [systemd_run, "--scope", "--quiet", "--collect", f"--unit={unit_name(job_id)}"]
    wrapped += [f"--property={p}" for p in properties]
    if uid is not None:
        wrapped.append(f"--uid={uid}")
    if gid is not None:
        wrapped.append(f"--gid={gid}")
    return (*wrapped, "--", *argv)
