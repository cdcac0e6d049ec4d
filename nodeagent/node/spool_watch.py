"""The state directory full or read-only: the event spool holds events in memory and retries every tick. The node
goes on (its safety needs no disk) and says so once, and again when the disk takes them."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from nodeagent.mqtt.spool import Spool

log = logging.getLogger("picluster.agent")


class SpoolWatch:
    """``tick()`` once a tick: flush what the spool holds in memory, and alert on every change of state."""

    def __init__(self, spool: Spool, state_dir: Path, emit: Callable[..., None]) -> None:
        self.spool, self.state_dir, self.emit = spool, state_dir, emit
        self.failing = False

    def tick(self) -> None:
        failing = not self.spool.flush()
        if failing == self.failing:
            return
        self.failing = failing
        where = self.state_dir
        if failing:
            free = shutil.disk_usage(where).free if where.is_dir() else 0
            fix = f"free space in {where} (df -h {where}) or point agent.state_dir at a roomier place"
            reason = self.spool.trouble
            log.error("event=state_dir_unwritable path=%s reason=%r free_bytes=%d fix=%r", where, reason, free, fix)
            message = (
                f"cannot write the event spool in {where}: {reason} ({free} bytes free); events are held in memory "
                f"and are lost if the agent stops: {fix}"
            )
            self.emit("alert", message=message, data={"state_dir": str(where), "spool": "memory", "free_bytes": free})
        else:
            log.warning("event=state_dir_writable path=%s", where)
            message = f"the event spool in {where} is written again; the events held in memory are on disk"
            self.emit("alert", message=message, data={"state_dir": str(where), "spool": "disk"})
