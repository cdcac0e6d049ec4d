"""The boundary between the agent and the kernel: one ``Backend`` gives the node's facts and a ``Sample`` per tick.

A backend must override ``facts()`` and ``read()``; it may override ``apply()`` (drive a fan, cap a frequency)
and ``close()`` (hand devices back to the kernel). ``RealBackend`` reads sysfs under a configurable root, so a
recorded tree of a real CM5 replays in tests; ``SimBackend`` models a node thermally from the real CPU load of
its jobs. Both return the same types, and one contract test suite runs over both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from nodeagent.hw.events import HwEvent
from nodeagent.hw.nvme import NvmeSample
from nodeagent.hw.pcie import PcieSample
from nodeagent.protocol.throttle import decode_throttled


@dataclass(frozen=True)
class Facts:
    """What a node is: published retained once per connection, used by the controller to plan jobs."""

    board: str  # profile name: compute-blade, nanocluster, cm5-io-board, pi5, generic, sim
    model: str  # device-tree model string, e.g. "Raspberry Pi Compute Module 5 Rev 1.0"
    serial: str
    cores: int
    memory_mb: int
    cpu: str = ""  # e.g. "Cortex-A76"
    hostname: str = ""
    slot: int | None = None  # chassis slot (NanoCluster 1-7) when known


@dataclass(frozen=True)
class Sample:
    """One reading of every fast sensor. ``None`` means the sensor is absent or could not be read this tick;
    ``errors`` says which reads failed and why, so the policy can treat an unreadable temperature as critical."""

    t: float  # wall-clock time of the sample, seconds since the epoch
    temp_c: float | None = None  # SoC temperature
    freq_mhz: float | None = None  # current CPU frequency (policy0)
    governor: str | None = None
    throttled: int | None = None  # raw get_throttled bits
    load1: float | None = None  # 1-minute load average
    mem_total_mb: int | None = None
    mem_avail_mb: int | None = None
    fan_duty_pct: float | None = None
    fan_rpm: int | None = None
    nvme: tuple[NvmeSample, ...] = ()  # every NVMe controller; SMART at its own slower interval
    pcie: tuple[PcieSample, ...] = ()  # every PCI device: link training and AER counters with their increase
    power_w: float | None = None  # PMIC rail power (sum of V x I), at its own slower interval
    ext5v_v: float | None = None  # the 5 V input as the PMIC measures it
    input_power_w: float | None = None  # through configured INA219/INA226 monitors (a chassis input)
    events: tuple[HwEvent, ...] = ()  # things that happened since the last sample (a drive vanished, hotplug)
    errors: tuple[str, ...] = field(default=())

    @property
    def throttle_names(self) -> tuple[str, ...]:
        return decode_throttled(self.throttled) if self.throttled is not None else ()


class Backend(ABC):
    """Source of facts and samples for one node (gpiozero's pin-factory pattern)."""

    name: str = "abstract"

    @abstractmethod
    def facts(self) -> Facts:
        """Describe the node; called once at start-up and cached by the agent."""

    @abstractmethod
    def read(self, now: float) -> Sample:
        """Read every fast sensor. Never raises for an unreadable sensor: it goes into ``Sample.errors``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold no devices
        """Release devices (give the fan back to the kernel)."""

    def describe(self) -> dict[str, str]:
        """Where each sensor is read from (``picluster-agent check``); empty where there is nothing to say."""
        return {}

    def rescan(self) -> None:  # noqa: B027 - optional hook, only backends with hot-pluggable devices need it
        """Look for devices again (after a hotplug event); what changed shows in the next sample's events."""

    def freq_ladder_khz(self) -> tuple[int, ...]:
        """The CPU frequencies (kHz) a frequency cap may take, lowest first; empty where it cannot be capped."""
        return ()

    def cap_freq(self, khz: int | None) -> list[str]:
        """Hold the CPU at or below ``khz`` (None: lift the cap); returns one line per part that refused."""
        return [] if khz is None else [f"frequency cap: the {self.name} backend cannot cap the CPU frequency"]

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
