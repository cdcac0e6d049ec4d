"""How many light jobs a node runs at once: a pure check for the runner (``jobs.light_max``).

Light jobs (templates with ``heavy = false``) do not hold the node, so without a limit any number could run beside
the heavy one. The MPI rank limits, which piclusterctl applies too, are in ``nodeagent/protocol/jobs.py``.
"""

from __future__ import annotations

from nodeagent.errors import JobRejected


def check_light(running: int, light_max: int) -> None:
    """Raise JobRejected unless one more light job may start while ``running`` light jobs run (``jobs.light_max``)."""
    if running >= light_max:
        raise JobRejected(
            f"{running} light job(s) already run on this node, the most jobs.light_max ({light_max}) allows; "
            "wait for one to end",
            "job.kind",
        )
