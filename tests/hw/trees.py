"""The recorded sysfs trees and what a correct reader must find in each (see tests/data/sysfs/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodeagent.hw.real import RealBackend

DATA = Path(__file__).resolve().parents[1] / "data" / "sysfs"


@dataclass(frozen=True)
class Expected:
    """Values the readers must report for one recorded tree (see tests/data/sysfs/README.md)."""

    temp_c: float
    temp_file: str  # the file the temperature comes from, relative to the root
    freq_mhz: float
    governor: str
    throttled: int
    throttle_names: tuple[str, ...]
    load1: float
    mem_total_mb: int
    mem_avail_mb: int
    board: str
    model: str
    serial: str
    hostname: str
    cores: int = 4
    cpu: str = "Cortex-A76"


TREES: dict[str, Expected] = {
    "cm5-nanocluster": Expected(
        temp_c=52.35,
        temp_file="sys/class/thermal/thermal_zone0/temp",
        freq_mhz=2400.0,
        governor="ondemand",
        throttled=0,
        throttle_names=(),
        load1=1.27,
        mem_total_mb=8052,
        mem_avail_mb=7336,
        board="generic",
        model="Raspberry Pi Compute Module 5 Rev 1.0",
        serial="6a3f9c21d84b07e5",
        hostname="nc-node3",
    ),
    "pi5-hwmon-only": Expected(
        temp_c=48.95,
        temp_file="sys/class/hwmon/hwmon0/temp1_input",
        freq_mhz=1500.0,
        governor="ondemand",
        throttled=0x50005,
        throttle_names=("under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"),
        load1=0.08,
        mem_total_mb=4051,
        mem_avail_mb=3498,
        board="pi5",
        model="Raspberry Pi 5 Model B Rev 1.0",
        serial="d83add4a1b7c9e02",
        hostname="pi5-lab",
    ),
}

# vcgencmd for replayed trees: a script printing a recorded `vcgencmd pmic_read_adc` (tests/data/pmic/README.md).
VCGENCMD = DATA.parent / "pmic" / "vcgencmd"


def recorded_backend(name: str, **options: object) -> RealBackend:
    """The real backend on recorded tree ``name``, with the recorded PMIC output as its vcgencmd."""
    return RealBackend(DATA / name, vcgencmd=str(VCGENCMD), **options)  # type: ignore[arg-type]
