"""Hardware events: a drive or PCI device came, went or changed, as one small value the agent can publish.

Readers return events alongside their samples (``NvmeHealth.read()``, ``PcieMonitor.read()``) and the udev monitor
(``HotplugMonitor``) hands them to a callback. An event is a fact, not an error: a drive that disappears is reported
once as ``nvme.lost`` and the reader carries on, rather than failing every tick until someone notices.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HwEvent:
    """One hardware event.

    ``kind`` is ``<family>.<what>``: ``nvme.lost`` / ``nvme.found`` (NvmeHealth), ``pcie.lost`` / ``pcie.found``
    (PcieMonitor), and ``<subsystem>.<udev action>`` from udev, e.g. ``pci.add``, ``block.remove``, ``nvme.change``,
    ``pci.bind``. ``device`` is the kernel's name for it (``nvme0``, ``0001:01:00.0``, ``nvme0n1``), ``message``
    one line for the operator (``nvme0 (Samsung SSD 980 500GB, S64DNX0R123456) is gone: /dev/nvme0: No such device``).
    """

    kind: str
    device: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.device}: {self.message}"
