"""Firmware throttling flags (``get_throttled``) and the ``rpi_volt`` under-voltage alarm, without vcgencmd.

``get_throttled`` is the same word as ``vcgencmd get_throttled`` (bits named in ``nodeagent.protocol.throttle``),
written by the kernel as hex without ``0x`` (``50005``). Its sysfs path under the firmware node differs between boards
(``soc/soc:firmware`` on a Pi 4, ``soc@107c000000/soc@107c000000:firmware`` expected on a Pi 5/CM5, not
confirmed on hardware), so it is found once by glob, or given explicitly with ``throttle_path``.
Mainline-based kernels (e.g. Ubuntu's) have no such file at all; then only the under-voltage alarm is read.

The ``rpi_volt`` hwmon ``in0_lcrit_alarm`` is the firmware's under-voltage flag as a file; when it is set the
reader reports bit 16 (``under_voltage_occurred``), so either source raises the same alarm.
"""

from __future__ import annotations

import re

from nodeagent.errors import HardwareError
from nodeagent.hw.root import SysfsRoot, read_int_file, read_text_file
from nodeagent.protocol.throttle import OCCURRED, UNDER_VOLTAGE

GET_THROTTLED_GLOB = "sys/devices/platform/soc*/*firmware*/get_throttled"
UNDER_VOLTAGE_OCCURRED = 1 << (UNDER_VOLTAGE + OCCURRED)

_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,8})")


def parse_throttled(text: str) -> int:
    """The get_throttled word from its sysfs text (``"50005"`` -> ``0x50005``). Raises ``ValueError`` on garbage."""
    match = _HEX.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected up to 8 hex digits, got {text[:40]!r}")
    return int(match.group(1), 16)


class Throttle:
    """Reads get_throttled (``read_bits``) and the rpi_volt under-voltage alarm (``read_under_voltage``).

    ``path`` overrides the glob; it is taken relative to the root like every other path. A configured path
    that does not exist is not "absent": every read reports it as an error, because the operator said it is there.
    """

    def __init__(self, root: SysfsRoot, *, path: str = "") -> None:
        self.firmware_path: str | None = None
        if path:
            self.firmware_path = str(root.path(path))
        else:
            found = root.glob(GET_THROTTLED_GLOB)
            if found:
                self.firmware_path = str(found[0])
        hwmon = root.find_hwmon("rpi_volt")
        self.alarm_path: str | None = str(hwmon / "in0_lcrit_alarm") if hwmon is not None else None

    @property
    def has_firmware(self) -> bool:
        """Whether a get_throttled file was found or configured."""
        return self.firmware_path is not None

    @property
    def has_alarm(self) -> bool:
        """Whether the rpi_volt under-voltage alarm exists."""
        return self.alarm_path is not None

    @property
    def present(self) -> bool:
        """Whether any throttle information exists on this machine."""
        return self.has_firmware or self.has_alarm

    def read_bits(self) -> int:
        """The raw get_throttled word; raises ``HardwareError`` naming the path when unreadable or garbage."""
        if self.firmware_path is None:
            raise HardwareError(f"get_throttled not present (looked for /{GET_THROTTLED_GLOB})")
        text = read_text_file(self.firmware_path)
        try:
            return parse_throttled(text)
        except ValueError as e:
            raise HardwareError(f"{self.firmware_path}: {e}") from e

    def read_under_voltage(self) -> bool:
        """Whether rpi_volt reports under-voltage (``in0_lcrit_alarm`` is 1)."""
        if self.alarm_path is None:
            raise HardwareError("hwmon 'rpi_volt' not present")
        return read_int_file(self.alarm_path) != 0
