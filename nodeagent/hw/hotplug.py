"""Hot-plug events from udev: a drive or PCI device added, removed, bound to a driver, or changed, as it happens.

``HotplugMonitor`` runs pyudev's ``MonitorObserver`` thread and turns each uevent of the watched subsystems into a
``HwEvent`` (``pci.add``, ``nvme.remove``, ``block.change``, ``pci.bind`` ...) handed to ``on_event`` at once.
The agent uses it to publish the event and to call ``rescan()`` on the NVMe and PCIe readers, which otherwise
look for new devices only at start-up.

Where there is no udev (no ``/run/udev/control``: a container or a minimal system; no libudev; netlink refused)
``start()`` logs one line at info and returns False; the agent carries on, and a drive that vanishes is still
seen by ``NvmeHealth`` as an ``nvme.lost`` event. ``source="kernel"`` listens to the kernel's own uevents
instead, which needs no udev daemon but comes before udev has made the device nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from nodeagent.hw.events import HwEvent

log = logging.getLogger(__name__)

UDEV_CONTROL = "/run/udev/control"  # udevd's control socket: it exists exactly when udevd is running
SUBSYSTEMS: tuple[str, ...] = ("nvme", "pci", "block")
# The words each udev action becomes in an event's message.
ACTION_WORDS = {
    "add": "added",
    "remove": "removed",
    "change": "changed",
    "bind": "bound to its driver",
    "unbind": "unbound from its driver",
    "move": "renamed",
    "online": "online",
    "offline": "offline",
}


def event_from_udev(action: str, device: Any) -> HwEvent:
    """The ``HwEvent`` for udev ``action`` on ``device`` (a ``pyudev.Device``, or anything with its attributes).

    ``kind`` is ``<subsystem>.<action>``; ``device`` the kernel name; the message adds the device node, the PCI
    id and the driver when udev knows them: ``pci 0001:01:00.0 added (144d:a80a, driver nvme)``.
    """
    subsystem = device.subsystem or "unknown"
    details = []
    if device.device_node:
        details.append(str(device.device_node))
    pci_id = device.properties.get("PCI_ID")
    if pci_id:
        details.append(pci_id.lower())
    driver = device.properties.get("DRIVER") or device.driver
    if driver:
        details.append(f"driver {driver}")
    message = f"{subsystem} {device.sys_name} {ACTION_WORDS.get(action, action)}"
    if details:
        message += f" ({', '.join(details)})"
    return HwEvent(f"{subsystem}.{action}", device.sys_name, message)


class HotplugMonitor:
    """Watches udev for ``subsystems`` and calls ``on_event(HwEvent)`` for every event, on its own thread.

    ``on_event`` must be quick and thread-safe (``queue.SimpleQueue().put`` is both); an exception in it is
    logged and the monitor carries on. ``udev_control`` is the path whose existence means udevd runs.
    """

    def __init__(
        self,
        on_event: Callable[[HwEvent], None],
        subsystems: Sequence[str] = SUBSYSTEMS,
        *,
        source: Literal["udev", "kernel"] = "udev",
        udev_control: str = UDEV_CONTROL,
    ) -> None:
        if source not in ("udev", "kernel"):
            raise ValueError(f"source: expected 'udev' or 'kernel', got {source!r}")
        self.on_event = on_event
        self.subsystems = tuple(subsystems)
        self.source = source
        self.udev_control = udev_control
        self._observer: Any = None
        self._told = False  # the "no udev" line is logged once per monitor

    @property
    def running(self) -> bool:
        """Whether the observer thread is alive."""
        return self._observer is not None and self._observer.is_alive()

    def start(self) -> bool:
        """Start watching. Returns False, after one info line, where udev events cannot be had here."""
        if self.running:
            return True
        if self.source == "udev" and not Path(self.udev_control).exists():
            return self._unavailable(f"udev is not running (no {self.udev_control})")
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context, source=self.source)
            if self.source == "udev":
                # Kernel-side filtering needs udev's message header; kernel-source events are filtered below.
                for subsystem in self.subsystems:
                    monitor.filter_by(subsystem)
            # Bind the socket here, not in the observer thread: events between start() returning and the thread
            # running would be lost, and a refused bind surfaces here rather than in a dying thread.
            monitor.start()
            observer = pyudev.MonitorObserver(monitor, callback=self._handle, name="picluster-hotplug")
            observer.daemon = True
            observer.start()
        except ImportError as e:  # pyudev missing, or pyudev without libudev.so.1
            return self._unavailable(f"pyudev/libudev unavailable ({e}); apt install python3-pyudev")
        except OSError as e:  # netlink refused (a container without the capability or the namespace)
            return self._unavailable(f"udev monitor refused: {e.strerror or e}")
        self._observer = observer
        log.info("hw hotplug watching source=%s subsystems=%s", self.source, ",".join(self.subsystems))
        return True

    def _unavailable(self, why: str) -> bool:
        if not self._told:
            log.info("hw hotplug off reason=%r; new devices are found at start-up or by rescan", why)
            self._told = True
        return False

    def _handle(self, device: Any) -> None:
        try:
            if device.subsystem not in self.subsystems:
                return
            self.on_event(event_from_udev(device.action or "change", device))
        except Exception as e:  # an exception here would end the observer thread silently
            log.warning("hw hotplug callback failed error=%r", f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        """Stop the observer thread and wait for it (at once if called from within ``on_event``)."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        if threading.current_thread() is observer:
            observer.send_stop()
        else:
            observer.stop()

    def __enter__(self) -> HotplugMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
