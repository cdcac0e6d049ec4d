"""A simulated node: a first-order thermal model of a CM5 driven by the real CPU load of the node's jobs.

The steady-state SoC temperature for a load of ``load`` busy cores and a fan duty of ``duty`` % is::

    target_c = ambient_c + (idle_rise_c + load_rise_c * min(load / cores, 1)) * (1 - fan_cooling * duty / 100)

and the temperature approaches it exponentially with time constant ``time_constant_s``, stepped by the ``now``
passed to ``read()`` (the model never reads a clock and never sleeps). Throttling follows the firmware's
policy: from ``soft_limit_c`` the frequency is cut progressively (bits 3 and 19), at ``throttle_c`` it is held
at the idle frequency (bits 2 and 18). The "occurred" bits stay set, as vcgencmd shows them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from nodeagent.errors import ConfigError, HardwareError
from nodeagent.hw.base import Backend, Facts, Sample
from nodeagent.hw.real import attempt
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.sim_devices import SIM_FAULTS, SimDevices
from nodeagent.protocol.throttle import SOFT_TEMP_LIMIT, STICKY_MASK, THROTTLED, now_and_since

# Sensors fail_sensor() can break; the names are RealBackend's (``real.SENSORS``), so a fault reads the same.
SIM_SENSORS: tuple[str, ...] = ("temperature", "freq", "governor", "throttle", "load", "memory", "fan")

SOFT_LIMIT_BITS = now_and_since(SOFT_TEMP_LIMIT)
THROTTLED_BITS = now_and_since(THROTTLED)
BUSY_LOAD = 0.5  # ondemand raises policy0 to the maximum once a core is more than half busy
LOAD1_TIME_CONSTANT_S = 60.0  # the kernel's 1-minute load average is an exponential average over 60 s
BASE_USED_MB = 600  # the OS and the agent on an idle node
USED_MB_PER_BUSY_CORE = 400  # a rough working set per busy core, enough to make MemAvailable move


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated node. Defaults resemble a CM5 with a heatsink in a NanoCluster."""

    ambient_c: float = 25.0
    idle_rise_c: float = 12.0  # SoC above ambient when idle, fan off
    load_rise_c: float = 45.0  # further rise with all cores busy, fan off
    fan_cooling: float = 0.55  # fraction of the rise removed at 100 % fan
    time_constant_s: float = 20.0
    cores: int = 4
    memory_mb: int = 8192
    fan_duty_pct: float = 40.0  # duty at start, until set_fan_duty()
    fan_max_rpm: int = 5000  # reported RPM at 100 % duty
    idle_freq_mhz: float = 1500.0
    max_freq_mhz: float = 2400.0
    soft_limit_c: float = 80.0
    throttle_c: float = 85.0
    temp_noise_c: float = 0.1  # peak of the deterministic sensor noise added to the reported temperature
    background_load: float = 0.0  # busy cores besides the node's jobs (a burn-in the simulator does not run)
    faults: tuple[str, ...] = ()  # injected from the start: fan_stop, sensor_fail, nvme_vanish, aer_climb

    def __post_init__(self) -> None:
        checks = (
            ("cores", self.cores >= 1, "at least 1"),
            ("memory_mb", self.memory_mb >= 64, "at least 64"),
            ("time_constant_s", self.time_constant_s > 0, "above 0"),
            ("fan_cooling", 0.0 <= self.fan_cooling <= 1.0, "between 0 and 1"),
            ("fan_duty_pct", 0.0 <= self.fan_duty_pct <= 100.0, "between 0 and 100"),
            ("max_freq_mhz", self.max_freq_mhz >= self.idle_freq_mhz > 0, "at least idle_freq_mhz (above 0)"),
            ("throttle_c", self.throttle_c > self.soft_limit_c, "above soft_limit_c"),
            ("temp_noise_c", self.temp_noise_c >= 0, "at least 0"),
            ("background_load", 0 <= self.background_load <= self.cores, "from 0 to cores"),
            ("faults", set(self.faults) <= set(SIM_FAULTS), f"a list of {', '.join(SIM_FAULTS)}"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"sim.{name}: expected {expected}, got {getattr(self, name)!r}")

    def target_c(self, load: float, duty_pct: float) -> float:
        """Steady-state SoC temperature for ``load`` busy cores at ``duty_pct`` % fan."""
        busy = min(max(load, 0.0) / self.cores, 1.0)
        rise = self.idle_rise_c + self.load_rise_c * busy
        return self.ambient_c + rise * (1.0 - self.fan_cooling * duty_pct / 100.0)


class SimBackend(Backend):
    """A simulated node named ``node_id``. ``load_fn()`` returns how many cores its jobs keep busy now (e.g. 1.7).

    ``host_root``, when given, is the machine the simulator runs on: its hostname goes into ``Facts`` so an
    operator can find the process. ``set_fan_duty()`` drives the simulated fan; ``fail_sensor()`` injects a fault.
    """

    name = "sim"

    def __init__(
        self,
        node_id: str,
        cfg: SimConfig,
        load_fn: Callable[[], float],
        *,
        host_root: SysfsRoot | None = None,
    ) -> None:
        self.node_id = node_id
        self.cfg = cfg
        self._load_fn = load_fn
        self._host_root = host_root
        digest = hashlib.sha256(node_id.encode()).digest()
        self._serial = digest[:8].hex()
        self._rng = random.Random(int.from_bytes(digest[8:16], "big"))
        self._duty_pct = cfg.fan_duty_pct
        self._failed: str | None = None
        self._temp_c: float | None = None  # the model's true temperature; None before the first read
        self._t: float | None = None
        self._load = 0.0
        self._load1 = 0.0
        self._sticky = 0
        self.devices = SimDevices(cfg.faults)
        self._cap_mhz: float | None = None  # the power budget's frequency cap

    @property
    def temp_c(self) -> float | None:
        """The model's true temperature (without sensor noise), None before the first read."""
        return self._temp_c

    def facts(self) -> Facts:
        """Simulated facts; the serial is derived from ``node_id``, so it is stable across runs."""
        hostname = self.node_id
        if self._host_root is not None:
            # A simulated node without its host's name is still a working simulated node.
            with contextlib.suppress(HardwareError):
                hostname = self._host_root.read_text("proc/sys/kernel/hostname") or hostname
        return Facts(
            board="sim",
            model="Simulated Raspberry Pi Compute Module 5",
            serial=self._serial,
            cores=self.cfg.cores,
            memory_mb=self.cfg.memory_mb,
            cpu="Cortex-A76 (simulated)",
            hostname=hostname,
        )

    def set_fan_duty(self, pct: float) -> None:
        """Set the simulated fan duty, 0-100 %."""
        if not 0.0 <= pct <= 100.0:  # also rejects NaN
            raise ValueError(f"fan duty: expected 0-100 %, got {pct!r}")
        self._duty_pct = float(pct)

    def freq_ladder_khz(self) -> tuple[int, ...]:
        """100 MHz steps from the idle to the maximum frequency, as on a BCM2712."""
        low, high = int(self.cfg.idle_freq_mhz * 1000), int(self.cfg.max_freq_mhz * 1000)
        return (*range(low, high, 100_000), high)

    def cap_freq(self, khz: int | None) -> list[str]:
        self._cap_mhz = None if khz is None else khz / 1000.0
        return []

    def inject(self, fault: str, active: bool = True) -> None:
        """Turn a fault (``SIM_FAULTS``: fan_stop, sensor_fail, nvme_vanish, aer_climb) on or off."""
        self.devices.inject(fault, active)

    def _cooling_duty(self) -> float:
        """The duty that cools: a stopped fan cools nothing, whatever it is told."""
        return 0.0 if "fan_stop" in self.devices.faults else self._duty_pct

    def fail_sensor(self, name: str | None) -> None:
        """Make sensor ``name`` (one of ``SIM_SENSORS``) unreadable from the next read on; None heals it."""
        if name is not None and name not in SIM_SENSORS:
            raise ValueError(f"sensor: expected one of {', '.join(SIM_SENSORS)}, got {name!r}")
        self._failed = name

    def read(self, now: float) -> Sample:
        """Advance the model to ``now`` and report it; never raises."""
        errors: list[str] = []
        load = attempt("load", self._load_fn, errors)
        if load is not None and math.isfinite(load):
            self._load = min(max(float(load), 0.0) + self.cfg.background_load, float(self.cfg.cores))
        self._advance(now)
        assert self._temp_c is not None  # set by _advance
        freq_mhz, bits = self._frequency_and_bits(self._temp_c)
        self._sticky |= bits & STICKY_MASK
        noise = self.cfg.temp_noise_c * (2.0 * self._rng.random() - 1.0)
        avail_mb = self.cfg.memory_mb - BASE_USED_MB - USED_MB_PER_BUSY_CORE * min(self._load, self.cfg.cores)
        values = {
            "temperature": {"temp_c": round(self._temp_c + noise, 3)},
            "freq": {"freq_mhz": freq_mhz},
            "governor": {"governor": "ondemand"},
            "throttle": {"throttled": bits | self._sticky},
            "load": {"load1": round(self._load1, 2)},
            "memory": {
                "mem_total_mb": self.cfg.memory_mb,
                "mem_avail_mb": max(int(avail_mb), self.cfg.memory_mb // 20),
            },
            "fan": {
                "fan_duty_pct": self._duty_pct,
                "fan_rpm": round(self.cfg.fan_max_rpm * self._cooling_duty() / 100.0),
            },
        }
        failed = {self._failed, "temperature" if "sensor_fail" in self.devices.faults else None}
        fields = {}
        for sensor, group in values.items():
            if sensor in failed:
                errors.append(f"{sensor}: sim:{self.node_id}: unreadable (injected fault)")
                continue
            fields.update(group)
        nvme, events = self.devices.nvme(self._temp_c, self.cfg.ambient_c, now)
        return Sample(
            t=now,
            nvme=nvme,
            pcie=self.devices.pcie(),
            power_w=self.devices.power_w(self._load, self.cfg.cores, freq_mhz / self.cfg.max_freq_mhz),
            ext5v_v=5.08,
            events=tuple(events),
            errors=tuple(errors),
            **fields,
        )

    def _advance(self, now: float) -> None:
        """Step temperature and load average from the last read to ``now`` (exactly: both are first order)."""
        cfg = self.cfg
        if self._temp_c is None or self._t is None:
            self._temp_c = cfg.ambient_c + cfg.idle_rise_c
            self._t = now
            return
        # A wall clock stepped back (NTP) re-anchors the model without moving it, rather than freezing it.
        dt = max(now - self._t, 0.0)
        self._t = now
        target = cfg.target_c(self._load, self._cooling_duty())
        self._temp_c = target + (self._temp_c - target) * math.exp(-dt / cfg.time_constant_s)
        keep = math.exp(-dt / LOAD1_TIME_CONSTANT_S)
        self._load1 = self._load1 * keep + self._load * (1.0 - keep)

    def _frequency_and_bits(self, temp_c: float) -> tuple[float, int]:
        """Frequency and the current get_throttled bits at ``temp_c``, following the firmware's thermal policy."""
        cfg = self.cfg
        top = cfg.max_freq_mhz if self._cap_mhz is None else max(min(self._cap_mhz, cfg.max_freq_mhz), 1.0)
        freq = top if self._load > BUSY_LOAD else min(cfg.idle_freq_mhz, top)
        if temp_c >= cfg.throttle_c:
            return cfg.idle_freq_mhz, SOFT_LIMIT_BITS | THROTTLED_BITS
        if temp_c >= cfg.soft_limit_c:
            cut = (temp_c - cfg.soft_limit_c) / (cfg.throttle_c - cfg.soft_limit_c)
            capped = cfg.max_freq_mhz - (cfg.max_freq_mhz - cfg.idle_freq_mhz) * cut
            return min(freq, capped), SOFT_LIMIT_BITS
        return freq, 0
