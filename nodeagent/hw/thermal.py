"""SoC temperature: the ``cpu-thermal`` thermal zone, or the ``cpu_thermal`` hwmon device when zones are hidden.

Both report millidegrees Celsius (``52350`` is 52.35 °C). On a PC the same reader falls back to the package
sensor (``x86_pkg_temp`` zone, ``coretemp`` or ``k10temp`` hwmon) so a development machine still reports a
temperature; the Raspberry Pi sources always win when present.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.errors import HardwareError
from nodeagent.hw.root import SysfsRoot, read_int_file


@dataclass(frozen=True)
class _Source:
    kind: str  # "zone" (match thermal_zone*/type) or "hwmon" (match hwmon*/name)
    key: str
    file: str

    def __str__(self) -> str:
        return f"thermal zone type {self.key!r}" if self.kind == "zone" else f"hwmon {self.key!r}"


# In order of preference. The first two are the BCM2712 SoC sensor seen two ways (the hwmon device is the
# thermal zone's own hwmon view); the rest make a PC usable for development.
SOURCES: tuple[_Source, ...] = (
    _Source("zone", "cpu-thermal", "temp"),
    _Source("hwmon", "cpu_thermal", "temp1_input"),
    _Source("zone", "x86_pkg_temp", "temp"),
    _Source("hwmon", "coretemp", "temp1_input"),
    _Source("hwmon", "k10temp", "temp1_input"),
)


class SocTemperature:
    """The SoC temperature in °C, from the first source in ``SOURCES`` present under the root.

    The source is chosen once, at construction. ``path`` is None when no source exists on this machine.
    """

    def __init__(self, root: SysfsRoot) -> None:
        self.path: str | None = None
        self.source = ""
        for source in SOURCES:
            found = root.find_thermal_zone(source.key) if source.kind == "zone" else root.find_hwmon(source.key)
            if found is not None:
                self.path = str(found / source.file)
                self.source = str(source)
                break

    @property
    def present(self) -> bool:
        """Whether a temperature source was found."""
        return self.path is not None

    @property
    def looked_for(self) -> str:
        """What was searched for, for the operator when nothing was found."""
        return ", ".join(str(s) for s in SOURCES)

    def read_c(self) -> float:
        """Current SoC temperature in °C; raises ``HardwareError`` naming the path when unreadable."""
        if self.path is None:
            raise HardwareError(f"not present (looked for {self.looked_for})")
        return read_int_file(self.path) / 1000.0
