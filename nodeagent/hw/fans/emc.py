"""Fans behind an I2C fan controller: Microchip EMC2301 (address 0x2F) and EMC2101 (address 0x4C), via smbus2.

Both are driven in *direct* mode: the agent writes the duty and the chip's own closed-loop/lookup-table control
is switched off, so one policy (the agent's) decides. The bus comes from ``smbus_factory(bus)`` (default
``smbus2.SMBus``), anything with ``read_byte_data(addr, reg)``, ``write_byte_data(addr, reg, value)`` and
``close()``.

Register facts: EMC2101 as the Compute Blade fan-unit firmware drives it (compute-blade-agent,
``pkg/smartfanunit/emc2101``); EMC2301 from its datasheet (DS20006532A) as other public drivers use it. Marked
**UNCONFIRMED** where not seen run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from nodeagent.errors import HardwareError
from nodeagent.hw.fans.base import Fan

REG_PRODUCT_ID = 0xFD
REG_MANUFACTURER_ID = 0xFE
SMSC_ID = 0x5D

# EMC2301 (one fan; the EMC2302/3/5 repeat the fan block at 0x40, 0x50, ...)
EMC2301_ADDRESS = 0x2F
EMC2301_PRODUCT_ID = 0x37  # EMC2305 0x34, EMC2303 0x35, EMC2302 0x36
EMC2301_PWM_POLARITY = 0x2A  # bit 0: fan 1 output inverted
EMC2301_FAN_SETTING = 0x30  # 0-255 duty in direct mode
EMC2301_PWM_DIVIDE = 0x31
EMC2301_FAN_CONFIG1 = 0x32  # bit 7 EN_ALGO (RPM control), bits 6:5 RANGE, bits 4:3 EDGES, bits 2:0 update time
EMC2301_TACH_HIGH = 0x3E  # count bits 12:5
EMC2301_TACH_LOW = 0x3F  # count bits 4:0 in bits 7:3
EMC2301_EN_ALGO = 0x80
EMC2301_RANGE_SHIFT = 5
EMC2301_TACH_MAX = 0x1FFF  # the count saturates here when no pulses arrive (stalled or no tach wire)
# Datasheet's simplified tach equation: RPM = 3_932_160 * m / COUNT, where m is the RANGE multiplier (1, 2, 4, 8)
# and the fan gives n = 2 * poles + 1 edges per count (EDGES setting), which makes (n - 1) / poles = 2 for every
# EDGES choice; 3_932_160 = 2 * 60 * 32_768 Hz (the tach clock). **UNCONFIRMED** on hardware.
EMC2301_RPM_FACTOR = 3_932_160

# EMC2101 (what the smart fan unit's firmware does to it)
EMC2101_ADDRESS = 0x4C
EMC2101_PRODUCT_IDS = (0x16, 0x28)  # EMC2101, EMC2101-R
EMC2101_CONFIG = 0x03  # bit 2: pin 4 is the TACH input (not ALERT); bit 4: DAC output (0 = PWM)
EMC2101_CONFIG_TACH = 0x04
EMC2101_CONFIG_DAC = 0x10
EMC2101_FAN_CONFIG = 0x4A  # bit 5 PROG: fan setting register writable, lookup table off; bit 4 POLARITY
EMC2101_FAN_PROG = 0x20
EMC2101_FAN_POLARITY = 0x10  # **UNCONFIRMED** bit position (datasheet memory, not seen in the firmware)
EMC2101_FAN_SETTING = 0x4C  # 0-63
EMC2101_SETTING_MAX = 63
EMC2101_TACH_LOW = 0x46  # read the low byte first: it latches the high byte
EMC2101_TACH_HIGH = 0x47
EMC2101_RPM_FACTOR = 5_400_000


class SMBusLike(Protocol):
    """The part of smbus2.SMBus these fans use."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def close(self) -> None: ...


def open_smbus(bus: int) -> SMBusLike:
    """``smbus2.SMBus(bus)``; ``HardwareError`` saying what to install or enable."""
    try:
        from smbus2 import SMBus
    except ImportError as e:
        raise HardwareError(f"smbus2 is not importable ({e}); install it: apt install python3-smbus2") from e
    try:
        return SMBus(bus)
    except OSError as e:
        raise HardwareError(
            f"/dev/i2c-{bus}: cannot open: {e.strerror or e} (enable I2C with dtparam=i2c_arm=on)"
        ) from e


class _EmcFan(Fan):
    """Shared register access; errors read ``EMC2301 (/dev/i2c-1 0x2f): register 0x30 write failed: …``."""

    chip: ClassVar[str]
    default_address: ClassVar[int]
    product_ids: ClassVar[tuple[int, ...]]

    def __init__(
        self,
        *,
        bus: int = 1,
        address: int | None = None,
        smbus_factory: Callable[[int], Any] | None = None,
        min_duty_pct: float = 0.0,
        inverted: bool = False,
    ) -> None:
        self.address = self.default_address if address is None else address
        super().__init__(f"{self.chip} (/dev/i2c-{bus} 0x{self.address:02x})", min_duty_pct=min_duty_pct)
        try:
            self._bus: SMBusLike = (smbus_factory or open_smbus)(bus)
        except HardwareError as e:
            raise HardwareError(f"{self.name}: {e}") from e
        except OSError as e:
            raise HardwareError(f"{self.name}: cannot open the bus: {e.strerror or e}") from e
        try:
            product = self._read(REG_PRODUCT_ID)
            if product not in self.product_ids:
                want = " or ".join(f"0x{p:02x}" for p in self.product_ids)
                raise HardwareError(f"{self.name}: product id 0x{product:02x}, expected {want}: another chip?")
            self._setup(inverted)
        except HardwareError:
            self._bus.close()
            raise

    def _setup(self, inverted: bool) -> None:
        raise NotImplementedError

    def _read(self, reg: int) -> int:
        try:
            return int(self._bus.read_byte_data(self.address, reg)) & 0xFF
        except OSError as e:
            raise HardwareError(f"{self.name}: register 0x{reg:02x} read failed: {e.strerror or e}") from e

    def _write(self, reg: int, value: int) -> None:
        try:
            self._bus.write_byte_data(self.address, reg, value & 0xFF)
        except OSError as e:
            raise HardwareError(f"{self.name}: register 0x{reg:02x} write failed: {e.strerror or e}") from e

    def _update_bits(self, reg: int, set_mask: int = 0, clear_mask: int = 0) -> int:
        """Read-modify-write ``reg``; written only when it changes. Returns the new value."""
        old = self._read(reg)
        new = (old | set_mask) & ~clear_mask & 0xFF
        if new != old:
            self._write(reg, new)
        return new

    def close(self) -> None:
        """Close the bus; the chip keeps the last duty."""
        self._bus.close()


class Emc2301Fan(_EmcFan):
    """One fan on an EMC2301, duty 0–255 in direct mode, RPM from its tach counter."""

    chip = "EMC2301"
    default_address = EMC2301_ADDRESS
    product_ids = (EMC2301_PRODUCT_ID,)

    def _setup(self, inverted: bool) -> None:
        config = self._update_bits(EMC2301_FAN_CONFIG1, clear_mask=EMC2301_EN_ALGO)
        self.range_multiplier = 1 << ((config >> EMC2301_RANGE_SHIFT) & 0x3)
        if inverted:
            self._update_bits(EMC2301_PWM_POLARITY, set_mask=0x01)
        else:
            self._update_bits(EMC2301_PWM_POLARITY, clear_mask=0x01)
        self._duty_pct = self._read(EMC2301_FAN_SETTING) * 100.0 / 255.0

    def _apply_duty(self, pct: float) -> None:
        self._write(EMC2301_FAN_SETTING, int(pct * 255 / 100 + 0.5))

    def _apply_full(self) -> None:
        # If something switched the RPM algorithm back on, the fan setting register is the algorithm's, not ours.
        self._update_bits(EMC2301_FAN_CONFIG1, clear_mask=EMC2301_EN_ALGO)
        self._write(EMC2301_FAN_SETTING, 0xFF)

    def read_rpm(self) -> int | None:
        """RPM from the 13-bit tach count; 0 when the count is saturated (no pulses: stalled or no tach wire)."""
        high = self._read(EMC2301_TACH_HIGH)
        low = self._read(EMC2301_TACH_LOW)
        count = (high << 5) | (low >> 3)
        if count == 0 or count >= EMC2301_TACH_MAX:
            return 0
        return round(EMC2301_RPM_FACTOR * self.range_multiplier / count)


class Emc2101Fan(_EmcFan):
    """The fan on an EMC2101 in PWM mode, setting 0–63, RPM = 5 400 000 / tach count."""

    chip = "EMC2101"
    default_address = EMC2101_ADDRESS
    product_ids = EMC2101_PRODUCT_IDS

    def _setup(self, inverted: bool) -> None:
        self._update_bits(EMC2101_CONFIG, set_mask=EMC2101_CONFIG_TACH, clear_mask=EMC2101_CONFIG_DAC)
        # The polarity bit is only ever set, never cleared: its position is the one unconfirmed fact here.
        polarity = EMC2101_FAN_POLARITY if inverted else 0
        self._update_bits(EMC2101_FAN_CONFIG, set_mask=EMC2101_FAN_PROG | polarity)
        self._duty_pct = self._read(EMC2101_FAN_SETTING) * 100.0 / EMC2101_SETTING_MAX

    def _apply_duty(self, pct: float) -> None:
        self._write(EMC2101_FAN_SETTING, int(pct * EMC2101_SETTING_MAX / 100 + 0.5))

    def _apply_full(self) -> None:
        self._write(EMC2101_FAN_SETTING, EMC2101_SETTING_MAX)

    def read_rpm(self) -> int | None:
        """RPM from the 16-bit tach count; 0 when it reads 0xFFFF (no pulses)."""
        low = self._read(EMC2101_TACH_LOW)
        high = self._read(EMC2101_TACH_HIGH)
        count = (high << 8) | low
        if count in (0, 0xFFFF):
            return 0
        return round(EMC2101_RPM_FACTOR / count)
