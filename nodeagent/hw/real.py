"""The backend for a real node: sysfs and procfs under a root (``/`` on a node, a recorded tree in tests).

Every device is looked up once, at construction; a tick opens a handful of fixed files and nothing else
(no globbing, no subprocess). A sensor that fails this tick leaves its field ``None`` and adds one line to
``Sample.errors``: ``temperature: /sys/class/thermal/thermal_zone0/temp: Permission denied``. A sensor this
machine does not have at all (get_throttled on a PC) is logged once as a warning at construction and named in
the first sample's errors; after that it is simply ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from nodeagent.hw.base import Backend, Facts, Sample
from nodeagent.hw.cpufreq import CpuFreq
from nodeagent.hw.events import HwEvent
from nodeagent.hw.freqcap import FreqCap
from nodeagent.hw.nvme import NvmeHealth
from nodeagent.hw.pcie import AerCounts, PcieMonitor, PcieSample
from nodeagent.hw.power import Ina2xx, PmicPower
from nodeagent.hw.root import SysfsRoot, read_int_file
from nodeagent.hw.system import LoadAverage, Memory, check_board, device_tree_model, read_facts
from nodeagent.hw.thermal import SocTemperature
from nodeagent.hw.throttle import GET_THROTTLED_GLOB, UNDER_VOLTAGE_OCCURRED, Throttle

log = logging.getLogger(__name__)

# The sensor names that start each ``Sample.errors`` line; the simulator uses the same names.
SENSORS: tuple[str, ...] = (
    "temperature",
    "freq",
    "governor",
    "throttle",
    "under_voltage",
    "load",
    "memory",
    "fan",
    "nvme",
    "pcie",
    "power",
    "input_power",
)

T = TypeVar("T")


def _no_increase(device: PcieSample) -> PcieSample:
    def zero(counts: AerCounts | None) -> AerCounts | None:
        if counts is None:
            return None
        return AerCounts(*(None if getattr(counts, s) is None else 0 for s in ("correctable", "nonfatal", "fatal")))

    return replace(device, increase=zero(device.increase), rootport_increase=zero(device.rootport_increase))


def attempt(sensor: str, read: Callable[[], T], errors: list[str]) -> T | None:
    """``read()``, or None with ``"<sensor>: <why>"`` appended to ``errors``: one bad sensor never stops a tick."""
    try:
        return read()
    except OSError as e:  # HardwareError included: its message already names the path and the cause
        errors.append(f"{sensor}: {e}")
    except Exception as e:  # a reader bug must not take the agent's safety loop down with it
        errors.append(f"{sensor}: unexpected {type(e).__name__}: {e}")
    return None


class RealBackend(Backend):
    """Reads a node's sensors from sysfs/procfs under ``root``.

    ``board`` is the board profile (``auto`` detects it, see ``detect_board``); ``throttle_path`` names the
    get_throttled file when the default glob does not find it. Both come from the configuration.
    """

    name = "real"

    def __init__(
        self,
        root: SysfsRoot | str | Path = "/",
        *,
        board: str = "auto",
        throttle_path: str = "",
        dev_dir: str = "",
        nvme_smart_interval_s: float = 60.0,
        pcie_interval_s: float = 5.0,
        power_interval_s: float = 10.0,
        vcgencmd: str = "vcgencmd",
        input_monitors: tuple[Ina2xx, ...] = (),
    ) -> None:
        self.root = root if isinstance(root, SysfsRoot) else SysfsRoot(root)
        self._board = check_board(board)  # a misspelt board fails at start-up, not at the first facts()
        self._facts: Facts | None = None
        self._temp = SocTemperature(self.root)
        self._cpufreq = CpuFreq(self.root)
        self._throttle = Throttle(self.root, path=throttle_path)
        self._memory = Memory(self.root)
        self._load = LoadAverage(self.root)
        # Device nodes live under the same root as sysfs, so a replayed tree never touches this machine's /dev.
        self._nvme = NvmeHealth(
            self.root, dev_dir=dev_dir or str(self.root.path("dev")), interval_s=nvme_smart_interval_s
        )
        # PCIe links and AER counters change slowly; the policy needs them every few seconds, not every tick.
        self._pcie = PcieMonitor(self.root)
        self._pcie_interval_s = pcie_interval_s
        self._pcie_last: tuple[PcieSample, ...] = ()
        self._pcie_t: float | None = None
        # vcgencmd only exists on a Raspberry Pi; elsewhere its absence is not worth a warning.
        is_pi = "raspberry pi" in device_tree_model(self.root).lower()
        self._pmic = PmicPower(vcgencmd, interval_s=power_interval_s) if is_pi else None
        self._inputs = input_monitors
        # The official fan connector's hwmon, read passively: the kernel keeps driving it until the agent's fan
        # policy takes it over, so reading it here never takes control away.
        self._fan_hwmon = self.root.find_hwmon("pwmfan")
        self._freq_cap = FreqCap(self.root)
        self._absent = self._report_absent()

    def _report_absent(self) -> tuple[str, ...]:
        """Warn once about each sensor this machine lacks; the lines also go into the first sample's errors."""
        absent = []
        if not self._temp.present:
            absent.append(f"temperature: absent (looked for {self._temp.looked_for})")
        if not self._cpufreq.present:
            absent.append(f"freq: absent (no {self._cpufreq.dir})")
        if not self._throttle.present:
            absent.append(f"throttle: absent (no /{GET_THROTTLED_GLOB} and no hwmon 'rpi_volt')")
        for line in absent:
            log.warning("hw sensor absent root=%s detail=%r", self.root.root, line)
        return tuple(absent)

    def freq_ladder_khz(self) -> tuple[int, ...]:
        return self._freq_cap.ladder_khz()

    def cap_freq(self, khz: int | None) -> list[str]:
        return self._freq_cap.set(khz)

    def facts(self) -> Facts:
        """Model, serial, cores, memory and board, read once and then remembered."""
        if self._facts is None:
            self._facts = read_facts(self.root, board=self._board)
        return self._facts

    def read(self, now: float) -> Sample:
        """One reading of every sensor; never raises (failures are in ``Sample.errors``)."""
        errors = list(self._absent)
        self._absent = ()
        temp_c = attempt("temperature", self._temp.read_c, errors) if self._temp.present else None
        freq_mhz = governor = None
        if self._cpufreq.present:
            freq_mhz = attempt("freq", self._cpufreq.read_mhz, errors)
            governor = attempt("governor", self._cpufreq.read_governor, errors)
        memory = attempt("memory", self._memory.read_mb, errors)
        events: list[HwEvent] = []
        nvme = self._nvme.read(now)
        power = self._pmic.read(now) if self._pmic else None
        errors += [*nvme.errors, *(power.errors if power else ())]
        return Sample(
            t=now,
            temp_c=temp_c,
            freq_mhz=freq_mhz,
            governor=governor,
            throttled=self._read_throttled(errors),
            load1=attempt("load", self._load.read_load1, errors),
            mem_total_mb=memory[0] if memory else None,
            mem_avail_mb=memory[1] if memory else None,
            **self._read_fan(errors),
            nvme=nvme.drives,
            pcie=self._read_pcie(now, events, errors),
            power_w=power.power_w if power else None,
            ext5v_v=power.pmic.ext5v_v if power and power.pmic else None,
            input_power_w=self._read_inputs(errors),
            events=(*nvme.events, *events),
            errors=tuple(errors),
        )

    def describe(self) -> dict[str, str]:
        """Where each sensor comes from on this machine, or why it is absent."""
        absent = "absent"
        throttle = [p for p in (self._throttle.firmware_path, self._throttle.alarm_path) if p]
        drives = ", ".join(str(d) for d in self._nvme.drives)
        return {
            "temperature": f"{self._temp.source}: {self._temp.path}" if self._temp.present else absent,
            "freq": str(self._cpufreq.dir) if self._cpufreq.present else absent,
            "throttle": " + ".join(throttle) or absent,
            "memory, load": f"{self.root.path('proc/meminfo')}, {self.root.path('proc/loadavg')}",
            "nvme": drives or "no NVMe controller",
            "pcie": f"{len(self._pcie.bdfs)} devices under {self.root.path('sys/bus/pci/devices')}",
            "power": f"{' '.join(self._pmic.argv)} every {self._pmic.interval_s:g} s" if self._pmic else absent,
            "input_power": ", ".join(repr(m) for m in self._inputs) or "none configured",
            "fan reading": str(self._fan_hwmon) if self._fan_hwmon else "no pwmfan hwmon",
        }

    def rescan(self) -> None:
        """After a hotplug event: find NVMe and PCI devices again (changes show as events in the next sample)."""
        self._nvme.rescan()
        self._pcie.rescan()
        self._pcie_t = None

    def _read_pcie(self, now: float, events: list[HwEvent], errors: list[str]) -> tuple[PcieSample, ...]:
        """The PCI devices, read again once ``pcie_interval_s`` has passed; in between, the last reading."""
        if self._pcie_t is not None and now - self._pcie_t < self._pcie_interval_s:
            return self._pcie_last
        reading = self._pcie.read(now)
        events += reading.events
        errors += reading.errors
        # The ticks until the next read repeat the devices, but nothing rose in between: an increase counts once.
        self._pcie_last, self._pcie_t = tuple(_no_increase(d) for d in reading.devices), now
        return reading.devices

    def _read_fan(self, errors: list[str]) -> dict[str, float | int | None]:
        """Duty (pwm1 of 255) and speed (fan1_input) of the pwmfan hwmon, where the board has one."""
        if self._fan_hwmon is None:
            return {}
        pwm = attempt("fan", lambda: read_int_file(str(self._fan_hwmon / "pwm1")), errors)
        rpm = attempt("fan", lambda: read_int_file(str(self._fan_hwmon / "fan1_input")), errors)
        return {"fan_duty_pct": round(pwm * 100 / 255, 1) if pwm is not None else None, "fan_rpm": rpm}

    def _read_inputs(self, errors: list[str]) -> float | None:
        """Total power through the configured I2C input monitors (a chassis supply), or None without any."""
        readings = [attempt("input_power", ina.read, errors) for ina in self._inputs]
        if not readings or any(r is None for r in readings):
            return None
        return round(sum(r.power_w for r in readings if r is not None), 3)

    def _read_throttled(self, errors: list[str]) -> int | None:
        """get_throttled with the rpi_volt alarm ORed into bit 16; the alarm alone where get_throttled is absent."""
        throttle = self._throttle
        bits: int | None = 0  # no get_throttled file: only the alarm can set a bit
        if throttle.has_firmware:
            bits = attempt("throttle", throttle.read_bits, errors)
        elif not throttle.has_alarm:
            return None
        if bits is not None and throttle.has_alarm and attempt("under_voltage", throttle.read_under_voltage, errors):
            bits |= UNDER_VOLTAGE_OCCURRED
        return bits
