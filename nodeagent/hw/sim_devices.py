"""The simulated node's NVMe drive, PCIe link and power, and the faults a test can inject into them.

Faults (``SIM_FAULTS``): ``fan_stop`` (the fan turns no more and cools nothing), ``sensor_fail`` (the SoC
temperature becomes unreadable), ``nvme_vanish`` (the drive drops off the bus: an ``nvme.lost`` event, then
``nvme.found`` when healed), ``aer_climb`` (correctable AER errors rise every read, non-fatal ones every fifth).
They can be set from the start with ``[sim] faults`` or toggled with ``SimBackend.inject()``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nodeagent.hw.events import HwEvent
from nodeagent.hw.nvme import NvmeSample, SmartLog
from nodeagent.hw.pcie import AerCounts, PcieLink, PcieSample

SIM_FAULTS: tuple[str, ...] = ("fan_stop", "sensor_fail", "nvme_vanish", "aer_climb")

NVME_BDF = "0001:01:00.0"
ROOT_PORT_BDF = "0001:00:00.0"
# Power of a CM5 as measured at the wall: 2.4 W idle, 9.4 W under HPL (4 GB board; reference hardware.md §3.4).
IDLE_W = 2.4
FULL_LOAD_W = 9.4
NVME_ABOVE_AMBIENT_C = 8.0  # an M.2 drive under a CM5 runs warmer than the air but well below the SoC
NVME_SOC_COUPLING = 0.3  # share of the SoC's rise above ambient that reaches the drive


def _smart(temp_c: float, power_on_hours: int) -> SmartLog:
    """A healthy drive's SMART page at ``temp_c``."""
    return SmartLog(
        critical_warning=0,
        composite_temp_c=round(temp_c, 1),
        available_spare_pct=100,
        available_spare_threshold_pct=10,
        percentage_used_pct=2,
        endurance_critical_warning=0,
        data_units_read=1_204_331,
        data_units_written=884_120,
        host_read_commands=40_211_870,
        host_write_commands=18_002_113,
        controller_busy_min=412,
        power_cycles=37,
        power_on_hours=power_on_hours,
        unsafe_shutdowns=4,
        media_errors=0,
        error_log_entries=0,
        warning_temp_time_min=0,
        critical_temp_time_min=0,
        temp_sensors_c=((1, round(temp_c + 3.0, 1)),),
        thermal_t1_transitions=0,
        thermal_t2_transitions=0,
        thermal_t1_time_s=0,
        thermal_t2_time_s=0,
    )


@dataclass
class _Aer:
    correctable: int = 0
    nonfatal: int = 0
    reads: int = 0


class SimDevices:
    """One NVMe drive behind one PCIe link, and the node's power, for a simulated node."""

    def __init__(self, faults: tuple[str, ...] = ()) -> None:
        self.faults: set[str] = set()
        for fault in faults:
            self.inject(fault)
        self._aer = _Aer()
        self._nvme_was_present = True

    def inject(self, fault: str, active: bool = True) -> None:
        """Turn ``fault`` (one of ``SIM_FAULTS``) on or off."""
        if fault not in SIM_FAULTS:
            raise ValueError(f"fault: expected one of {', '.join(SIM_FAULTS)}, got {fault!r}")
        if active:
            self.faults.add(fault)
        else:
            self.faults.discard(fault)

    def power_w(self, busy_cores: float, cores: int, freq_ratio: float = 1.0) -> float:
        """Power drawn at ``busy_cores`` of ``cores`` busy, linear between idle and full load at full clock.

        ``freq_ratio`` is the clock over the maximum: the load's share scales with its square (dynamic power goes
        with f·V², and DVFS lowers V with f), which is what makes a frequency cap save power.
        """
        busy = min(max(busy_cores, 0.0) / cores, 1.0)
        return round(IDLE_W + (FULL_LOAD_W - IDLE_W) * busy * min(max(freq_ratio, 0.0), 1.0) ** 2, 3)

    def nvme(self, soc_c: float, ambient_c: float, now: float) -> tuple[tuple[NvmeSample, ...], list[HwEvent]]:
        """The drive (or its absence) and the events of it coming or going."""
        present = "nvme_vanish" not in self.faults
        events = []
        if present != self._nvme_was_present:
            kind = "nvme.found" if present else "nvme.lost"
            events.append(HwEvent(kind, "nvme0", f"nvme0 (simulated drive) {'is back' if present else 'is gone'}"))
            self._nvme_was_present = present
        if not present:
            return (NvmeSample("nvme0", present=False),), events
        temp_c = ambient_c + NVME_ABOVE_AMBIENT_C + NVME_SOC_COUPLING * (soc_c - ambient_c)
        hours = 1000 + int(now // 3600) % 10_000
        return (
            NvmeSample("nvme0", temp_c=round(temp_c, 2), temp_source="smart", smart=_smart(temp_c, hours), smart_t=now),
        ), events

    def pcie(self) -> tuple[PcieSample, ...]:
        """The root port and the drive behind it; AER counters climb under the ``aer_climb`` fault: the drive
        counts RxErr +1 and BadTLP +2 every read, and UnsupReq +1 (non-fatal) every fifth, named as a current
        kernel names them."""
        increase = AerCounts(correctable=0, nonfatal=0, fatal=0)
        grown: dict[str, dict[str, int]] = {}
        if "aer_climb" in self.faults:
            self._aer.reads += 1
            nonfatal = 1 if self._aer.reads % 5 == 0 else 0
            self._aer.correctable += 3
            self._aer.nonfatal += nonfatal
            increase = AerCounts(correctable=3, nonfatal=nonfatal, fatal=0)
            grown = {"correctable": {"BadTLP": 2, "RxErr": 1}, **({"nonfatal": {"UnsupReq": 1}} if nonfatal else {})}
        link = PcieLink(speed_gts=8.0, max_speed_gts=8.0, width=1, max_width=1)
        totals = AerCounts(correctable=self._aer.correctable, nonfatal=self._aer.nonfatal, fatal=0)
        cor, nonfatal_n = self._aer.correctable, self._aer.nonfatal
        counters = {
            "correctable": {"RxErr": cor // 3, "BadTLP": cor // 3 * 2, "TOTAL_ERR_COR": cor},
            "nonfatal": {"UnsupReq": nonfatal_n, "TOTAL_ERR_NONFATAL": nonfatal_n},
            "fatal": {"TOTAL_ERR_FATAL": 0},
        }
        drive = PcieSample(
            bdf=NVME_BDF,
            pci_id="sim:nvme",
            link=link,
            aer=totals,
            counters=counters,
            increase=increase,
            types_increase=grown,
        )
        port = replace(
            drive,
            bdf=ROOT_PORT_BDF,
            pci_id="14e4:2712",
            aer=AerCounts(0, 0, 0),
            counters={},
            increase=AerCounts(0, 0, 0),
            types_increase={},
            rootport=totals,
            rootport_increase=increase,
        )
        return (port, drive) if "nvme_vanish" not in self.faults else (port,)
