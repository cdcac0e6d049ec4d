"""Write the recorded SMART / Health log pages in this directory: ``python3 tests/data/nvme/make_pages.py``.

The offsets below are transcribed from the NVMe base specification's SMART / Health Information log (LID 02h)
and ``struct nvme_smart_log`` independently of ``nodeagent/hw/nvme.py``, so the parser is checked against a
second reading of the layout rather than against itself. The tests import ``pack_smart_page`` from here for the
property-based round trip, and check that the files still match what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# field: (offset, size in bytes). Every field is little-endian and unsigned.
LAYOUT: dict[str, tuple[int, int]] = {
    "critical_warning": (0, 1),
    "composite_temp_k": (1, 2),
    "available_spare_pct": (3, 1),
    "available_spare_threshold_pct": (4, 1),
    "percentage_used_pct": (5, 1),
    "endurance_critical_warning": (6, 1),
    "data_units_read": (32, 16),
    "data_units_written": (48, 16),
    "host_read_commands": (64, 16),
    "host_write_commands": (80, 16),
    "controller_busy_min": (96, 16),
    "power_cycles": (112, 16),
    "power_on_hours": (128, 16),
    "unsafe_shutdowns": (144, 16),
    "media_errors": (160, 16),
    "error_log_entries": (176, 16),
    "warning_temp_time_min": (192, 4),
    "critical_temp_time_min": (196, 4),
    **{f"temp_sensor{i}_k": (200 + 2 * (i - 1), 2) for i in range(1, 9)},
    "thermal_t1_transitions": (216, 4),
    "thermal_t2_transitions": (220, 4),
    "thermal_t1_time_s": (224, 4),
    "thermal_t2_time_s": (228, 4),
}
PAGE_SIZE = 512


def pack_smart_page(**fields: int) -> bytes:
    """A 512-byte page with ``fields`` (names from ``LAYOUT``) at their offsets and zeros elsewhere."""
    page = bytearray(PAGE_SIZE)
    for name, value in fields.items():
        offset, size = LAYOUT[name]
        page[offset : offset + size] = value.to_bytes(size, "little")
    return bytes(page)


# The recorded drives. "healthy" is the CM5 tree's Samsung 980 (41.85 °C, as its hwmon temp1_input says).
PAGES: dict[str, dict[str, int]] = {
    "healthy.bin": {
        "composite_temp_k": 315,
        "available_spare_pct": 100,
        "available_spare_threshold_pct": 10,
        "percentage_used_pct": 3,
        "data_units_read": 12_345_678,
        "data_units_written": 9_876_543,
        "host_read_commands": 234_567_890,
        "host_write_commands": 345_678_901,
        "controller_busy_min": 1_234,
        "power_cycles": 187,
        "power_on_hours": 2_961,
        "unsafe_shutdowns": 23,
        "temp_sensor1_k": 315,
        "temp_sensor2_k": 321,
    },
    # A worn drive in a hot case: spare below threshold and over-temperature, media errors logged.
    "warning-spare-temp.bin": {
        "critical_warning": 0x03,
        "composite_temp_k": 358,
        "available_spare_pct": 4,
        "available_spare_threshold_pct": 10,
        "percentage_used_pct": 97,
        "data_units_read": 801_234_567,
        "data_units_written": 765_432_109,
        "host_read_commands": 9_876_543_210,
        "host_write_commands": 8_765_432_109,
        "controller_busy_min": 98_765,
        "power_cycles": 1_402,
        "power_on_hours": 31_337,
        "unsafe_shutdowns": 311,
        "media_errors": 17,
        "error_log_entries": 212,
        "warning_temp_time_min": 93,
        "critical_temp_time_min": 4,
        "temp_sensor1_k": 360,
        "thermal_t1_transitions": 1_503,
        "thermal_t2_transitions": 41,
        "thermal_t1_time_s": 8_123,
        "thermal_t2_time_s": 311,
    },
    # Counters past 2**64 (only a 128-bit read gets them right), endurance past 100 %, and critical_warning
    # bits 2 (reliability), 5 (persistent memory read-only, NVMe 1.4) and 6 (unnamed).
    "counters-over-2e64.bin": {
        "critical_warning": 0x64,
        "composite_temp_k": 300,
        "available_spare_pct": 50,
        "available_spare_threshold_pct": 5,
        "percentage_used_pct": 255,
        "endurance_critical_warning": 0x01,
        "data_units_read": 2**64 + 7,
        "data_units_written": 2**65 + 3,
        "host_read_commands": 2**100 + 1,
        "host_write_commands": 2**128 - 1,
        "power_on_hours": 2**64,
        "power_cycles": 5,
    },
}


def main() -> int:
    here = Path(__file__).resolve().parent
    for name, fields in PAGES.items():
        (here / name).write_bytes(pack_smart_page(**fields))
        print(f"wrote {here / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
