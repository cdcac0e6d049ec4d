"""Board power: the Pi 5 / CM5 PMIC rails through ``vcgencmd pmic_read_adc``, and INA219/INA226 monitors on I2C.

The PMIC's ADC has no sysfs route: only the firmware can read it, through ``vcgencmd`` (the VideoCore mailbox,
``/dev/vcio``). ``PmicPower`` therefore runs one short process at most every ``interval_s`` (10 s by default) and
hands out the last result in between, so the agent never starts a process per tick. The rail sum Σ V·I is the
power of the SoC and board rails the PMIC supplies, not wall power: there is no input-current rail, and people
who compared it with a meter add about 15 % plus 0.6 W. ``EXT5V_V`` is the 5 V input as the PMIC sees it, some
100-150 mV below the supply, so it is the number to watch for a weak power supply.

``Ina2xx`` reads a TI INA219 or INA226 current monitor (a HAT, or a shunt in a chassis's power path) directly
from its bus-voltage and shunt-voltage registers, so it needs no calibration register programmed.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nodeagent.errors import HardwareError

log = logging.getLogger(__name__)

# One rail reading: "  VDD_CORE_A current(7)=1.54489000A" or "     EXT5V_V volt(24)=4.87894000V".
_ADC_LINE = re.compile(r"\s*(\S+)_(?:(A)\s+current|(V)\s+volt)\((\d+)\)=(-?[0-9]+(?:\.[0-9]*)?)([AV])\s*")


@dataclass(frozen=True)
class PmicRail:
    """One PMIC rail: its voltage and current, either None when the PMIC reports only the other."""

    name: str  # VDD_CORE, EXT5V, ...
    volts: float | None
    current_a: float | None

    @property
    def power_w(self) -> float | None:
        """V·I when both are reported."""
        return None if self.volts is None or self.current_a is None else self.volts * self.current_a


@dataclass(frozen=True)
class PmicReading:
    """Everything ``vcgencmd pmic_read_adc`` printed, paired into rails."""

    rails: tuple[PmicRail, ...]  # in the order the rails first appear in the output
    raw: tuple[tuple[str, int, float], ...]  # every line as (label, ADC channel, value): ("VDD_CORE_A", 7, 1.54)

    @property
    def power_w(self) -> float:
        """Σ V·I over the rails that report both: SoC and board rails, not wall power."""
        return sum(p for r in self.rails if (p := r.power_w) is not None)

    @property
    def ext5v_v(self) -> float | None:
        """The 5 V input voltage as the PMIC sees it (``EXT5V_V``), or None if not reported."""
        rail = self.rail("EXT5V")
        return rail.volts if rail else None

    def rail(self, name: str) -> PmicRail | None:
        """The rail called ``name`` (without the ``_A``/``_V`` suffix), or None."""
        return next((r for r in self.rails if r.name == name), None)


def parse_pmic_adc(text: str) -> PmicReading:
    """Parse ``vcgencmd pmic_read_adc`` output. Raises ``ValueError`` naming the first line that is not a rail
    reading, a label seen twice, or output with no readings at all (e.g. firmware without the command)."""
    raw: list[tuple[str, int, float]] = []
    volts: dict[str, float] = {}
    amps: dict[str, float] = {}
    order: dict[str, None] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _ADC_LINE.fullmatch(line)
        if match is None or (match.group(2) or match.group(3)) != match.group(6):
            expected = "'<RAIL>_A current(<n>)=<amps>A' or '<RAIL>_V volt(<n>)=<volts>V'"
            raise ValueError(f"expected {expected}, got {line[:80]!r}")
        name, channel, value = match.group(1), int(match.group(4)), float(match.group(5))
        table = amps if match.group(2) else volts
        if name in table:
            raise ValueError(f"rail {name}_{match.group(6)} appears twice")
        table[name] = value
        order[name] = None
        raw.append((f"{name}_{match.group(6)}", channel, value))
    if not raw:
        raise ValueError(f"no rail readings in vcgencmd output {text[:60]!r}")
    rails = tuple(PmicRail(name, volts.get(name), amps.get(name)) for name in order)
    return PmicReading(rails=rails, raw=tuple(raw))


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run ``argv`` and return its standard output. A missing program raises ``FileNotFoundError``; a failure or
    a timeout raises ``HardwareError`` with the command and what it printed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise HardwareError(f"{' '.join(argv)}: no answer within {timeout_s:g} s") from e
    except PermissionError as e:
        raise HardwareError(f"{' '.join(argv)}: {e.strerror}") from e
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise HardwareError(f"{' '.join(argv)}: exit status {done.returncode}: {said[0] if said else 'no output'}")
    return done.stdout


@dataclass(frozen=True)
class PowerSample:
    """The PMIC's latest reading at one tick: ``pmic`` was measured at ``measured_t`` (None if it is absent or
    the last attempt failed; a failed attempt's error is in ``errors`` once)."""

    t: float
    pmic: PmicReading | None = None
    measured_t: float | None = None
    errors: tuple[str, ...] = ()

    @property
    def power_w(self) -> float | None:
        return self.pmic.power_w if self.pmic else None

    @property
    def ext5v_v(self) -> float | None:
        return self.pmic.ext5v_v if self.pmic else None


class PmicPower:
    """PMIC rail power from ``vcgencmd pmic_read_adc``, at most one process every ``interval_s``.

    ``run(argv, timeout_s) -> stdout`` runs the command (``run_command``; tests pass recorded output). When the
    program does not exist the reader is absent: one warning in the log and in the first sample's errors, then
    ``None`` quietly. A failed run (no ``/dev/vcio`` access, old firmware) is one error line and no reading,
    retried after ``interval_s``. A run blocks the caller while it lasts: vcgencmd answers in milliseconds, and
    ``timeout_s`` caps a wedged firmware mailbox.
    """

    def __init__(
        self,
        vcgencmd: str = "vcgencmd",
        *,
        interval_s: float = 10.0,
        timeout_s: float = 2.0,
        run: Callable[[Sequence[str], float], str] = run_command,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a number above 0, got {interval_s!r}")
        self.argv = (vcgencmd, "pmic_read_adc")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._run = run
        self.present = True
        self._last_try: float | None = None
        self._reading: PmicReading | None = None
        self._measured_t: float | None = None

    def read(self, now: float) -> PowerSample:
        """The latest PMIC reading, refreshed when ``interval_s`` has passed since the last attempt; never raises."""
        if not self.present:
            return PowerSample(now)
        due = self._last_try is None or now - self._last_try >= self.interval_s or now < self._last_try
        if not due:
            return PowerSample(now, self._reading, self._measured_t)
        self._last_try = now
        self._reading = self._measured_t = None  # a failed attempt must not leave a stale power on show
        try:
            self._reading = parse_pmic_adc(self._run(self.argv, self.timeout_s))
        except FileNotFoundError as e:
            self.present = False
            line = f"power: absent ({self.argv[0]} not found: {e.strerror or e}; PMIC rails need Raspberry Pi's utils)"
            log.warning("hw sensor absent detail=%r", line)
            return PowerSample(now, errors=(line,))
        except OSError as e:  # HardwareError included: run_command's message names the command
            return PowerSample(now, errors=(f"power: {e}",))
        except ValueError as e:
            return PowerSample(now, errors=(f"power: {' '.join(self.argv)}: {e}",))
        self._measured_t = now
        return PowerSample(now, self._reading, now)


# --- INA219 / INA226 ------------------------------------------------------------------------------------------------

INA_SHUNT_REG = 0x01
INA_BUS_REG = 0x02
# Register scales from the TI datasheets: shunt LSB in volts (signed), bus LSB in volts and the bit shift.
INA_SCALES: dict[str, tuple[float, float, int]] = {
    "ina219": (10e-6, 4e-3, 3),  # shunt 10 µV; bus bits 15..3, 4 mV (bit 1 CNVR, bit 0 OVF below)
    "ina226": (2.5e-6, 1.25e-3, 0),  # shunt 2.5 µV; bus 1.25 mV, bit 15 always 0
}


class SMBusLike(Protocol):
    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def close(self) -> None: ...


def _swap16(word: int) -> int:
    """SMBus words arrive low byte first; the INA sends its registers high byte first."""
    return ((word & 0xFF) << 8) | (word >> 8 & 0xFF)


@dataclass(frozen=True)
class InaReading:
    """One reading of an INA current monitor."""

    bus_v: float  # load-side voltage to ground
    shunt_v: float  # across the shunt; negative when current flows backwards
    current_a: float
    power_w: float


class Ina2xx:
    """An INA219 or INA226 on I2C bus ``bus`` at ``address``, with a shunt of ``shunt_ohms``.

    ``smbus_factory(bus)`` opens the bus (``smbus2.SMBus`` by default, opened on the first read and kept open).
    ``read()`` raises ``HardwareError`` naming the chip, bus, address and register when the chip does not answer.
    """

    def __init__(
        self,
        bus: int,
        address: int,
        *,
        kind: Literal["ina219", "ina226"],
        shunt_ohms: float,
        smbus_factory: Callable[[int], SMBusLike] | None = None,
    ) -> None:
        if kind not in INA_SCALES:
            raise ValueError(f"kind: expected one of {', '.join(INA_SCALES)}, got {kind!r}")
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"address: expected a 7-bit I2C address 0x03-0x77, got {address!r}")
        if not shunt_ohms > 0:
            raise ValueError(f"shunt_ohms: expected a resistance above 0, got {shunt_ohms!r}")
        self.bus, self.address, self.kind, self.shunt_ohms = bus, address, kind, shunt_ohms
        self._factory = smbus_factory
        self._smbus: SMBusLike | None = None

    def __repr__(self) -> str:
        return f"{self.kind} (i2c-{self.bus} 0x{self.address:02x})"

    def _register(self, register: int) -> int:
        smbus = self._smbus or self._open()
        try:
            return _swap16(smbus.read_word_data(self.address, register))
        except OSError as e:  # EREMOTEIO: nothing answered at this address
            raise HardwareError(f"{self!r}: register 0x{register:02x}: {e.strerror or e}") from e

    def _open(self) -> SMBusLike:
        factory = self._factory
        if factory is None:
            try:
                from smbus2 import SMBus
            except ImportError as e:
                raise HardwareError(f"{self!r}: smbus2 is not installed (apt install python3-smbus2)") from e
            factory = SMBus
        try:
            self._smbus = factory(self.bus)
        except OSError as e:
            raise HardwareError(
                f"{self!r}: /dev/i2c-{self.bus}: {e.strerror or e} (is the bus enabled, e.g. dtparam=i2c_arm=on?)"
            ) from e
        return self._smbus

    def read(self) -> InaReading:
        """Bus voltage, shunt voltage, and the current and power they give."""
        shunt_lsb, bus_lsb, bus_shift = INA_SCALES[self.kind]
        shunt = self._register(INA_SHUNT_REG)
        shunt_v = (shunt - 0x10000 if shunt & 0x8000 else shunt) * shunt_lsb  # two's complement
        bus_v = (self._register(INA_BUS_REG) >> bus_shift) * bus_lsb
        current_a = shunt_v / self.shunt_ohms
        return InaReading(bus_v=bus_v, shunt_v=shunt_v, current_a=current_a, power_w=bus_v * current_a)

    def close(self) -> None:
        """Close the I2C bus (it reopens on the next read)."""
        if self._smbus is not None:
            self._smbus.close()
            self._smbus = None

    def __enter__(self) -> Ina2xx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
