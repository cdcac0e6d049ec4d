"""Slot power on the chassis's slot 1: the operator's ``power`` commands and the automatic power-cycle.

Commands arrive validated (``Command`` with ``cmd="power"``); this module refuses what would do harm: switching
the driver's own slot (nothing could switch it back), and "on" for a node that is online (on a CM5 the same
short pulse asks a running module to shut down). Pulses take seconds, so one worker thread carries them out in
order, off the agent's loop. Every command ends in one event carrying its id: ``finished``, ``failed`` or
``rejected``; every automatic attempt is an ``alert``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from nodeagent.errors import HardwareError
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.slot_lines import SlotLines, SlotPowerConfig, find_chip, pin_factory
from nodeagent.policy.auto_cycle import CycleTrack, auto_cycle
from nodeagent.policy.config import AutoCycleConfig
from nodeagent.protocol import Command
from nodeagent.protocol.topics import MAX_NODES

log = logging.getLogger("picluster.slots")
MAX_WAITING = 16  # power commands waiting for the worker (each takes seconds); more are refused, not queued for hours


class SlotPower:
    """Slot power of one chassis. ``open_lines`` builds the lines on first use (a missing expander is an
    error for that command, not for the agent)."""

    def __init__(
        self,
        own: str,
        own_slot: int,
        open_lines: Callable[[], SlotLines],
        auto: AutoCycleConfig,
        emit: Callable[..., None],
    ) -> None:
        self.own = own
        self.own_slot = own_slot
        self._open_lines = open_lines
        self._lines: SlotLines | None = None
        self.auto = auto
        self.emit = emit
        self.online: dict[str, bool] = {}
        self.slots: dict[str, int] = {}
        self.tracks: dict[str, CycleTrack] = {}
        self._work: queue.SimpleQueue[tuple[str, int, str, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._worker, name="slot-power", daemon=True)
        self._thread.start()

    # --- what the driver hears ------------------------------------------------------------------------------------
    def status(self, node: str, online: bool) -> None:
        if node != self.own and (node in self.online or len(self.online) < MAX_NODES):
            self.online[node] = online

    def facts(self, node: str, slot: int | None) -> None:
        if node != self.own and slot and (node in self.slots or len(self.slots) < MAX_NODES):
            self.slots[node] = slot

    def forget(self, node: str) -> None:
        for table in (self.online, self.slots, self.tracks):
            table.pop(node, None)

    def node_in(self, slot: int) -> str:
        return next((n for n, s in self.slots.items() if s == slot), "")

    # --- commands -------------------------------------------------------------------------------------------------
    def command(self, cmd: Command) -> None:
        action, slot = cmd.value, cmd.slot
        who = self.node_in(slot)
        refusal = ""
        if slot == self.own_slot:
            refusal = f"slot {slot} is this node ({self.own}), which switches the others; power it by hand"
        elif action == "on" and who and self.online.get(who):
            refusal = f"{who} in slot {slot} is online; an 'on' pulse would ask it to shut down"
        elif self._work.qsize() >= MAX_WAITING:
            refusal = f"{MAX_WAITING} power commands are already waiting; try again when they are done"
        if refusal:
            self.emit("rejected", cmd.id, reason=f"power {action}: {refusal}", field="slot")
            return
        self._work.put((action, slot, cmd.id, f"by {cmd.sender or 'an operator'}"))

    def tick(self, now: float) -> None:
        """The automatic power-cycle (``policy.auto_cycle``): decide, and queue what is due."""
        if not self.auto.enabled:
            return
        self.tracks, decisions = auto_cycle(
            self.online, self.slots, self.tracks, self.auto, now, own_slot=self.own_slot
        )
        for d in decisions:
            if d.kind == "give_up":
                message = (
                    f"auto power-cycle: {d.node} (slot {d.slot}) still offline after {d.attempt} tries over "
                    f"{d.offline_s:.0f} s; giving up until it has been online again"
                )
            else:
                message = (
                    f"auto power-cycle: {d.node} (slot {d.slot}) offline for {d.offline_s:.0f} s, "
                    f"try {d.attempt} of {self.auto.max_tries}"
                )
            log.warning("event=auto_cycle_%s node=%s slot=%d attempt=%d", d.kind, d.node, d.slot, d.attempt)
            self.emit(
                "alert",
                message=message,
                data={"power": f"auto_{d.kind}", "node": d.node, "slot": d.slot, "attempt": d.attempt},
            )
            if d.kind == "cycle":
                self._work.put(("cycle", d.slot, "", "automatically"))

    # --- the worker -----------------------------------------------------------------------------------------------
    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            action, slot, cmd_id, by = item
            who = self.node_in(slot) or "no known node"
            data: dict[str, Any] = {"power": action, "slot": slot, "node": who}
            try:
                if self._lines is None:
                    self._lines = self._open_lines()
                self._lines.act(action, slot)
            except (HardwareError, OSError, ValueError) as e:
                log.error("event=slot_power_failed action=%s slot=%d error=%r", action, slot, str(e))
                if cmd_id:
                    self.emit("failed", cmd_id, reason=f"power {action} slot {slot}: {e}", data=data)
                else:
                    self.emit("alert", message=f"auto power-cycle of slot {slot} failed: {e}", data=data)
                continue
            if cmd_id:
                self.emit("finished", cmd_id, message=f"power {action}: slot {slot} ({who}) {by}", data=data)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=60.0)
        if self._lines is not None:
            self._lines.close()


def open_slot_lines(cfg: SlotPowerConfig, root: str, factory: Any, sim: bool) -> SlotLines:
    """The slot power lines: the given pin factory (tests), gpiozero's mock pins on a simulated node, else lgpio
    on the expander's gpiochip."""
    if factory is None and sim:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    if factory is None:
        factory = pin_factory(find_chip(SysfsRoot(root), cfg))
    return SlotLines(cfg, factory)
