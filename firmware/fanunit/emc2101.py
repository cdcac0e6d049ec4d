"""The smart fan unit's EMC2101 fan controller, over any object with MicroPython's I2C memory methods.

Registers (from the unit's stock firmware driver): 0x00 internal temperature, 0x01 external diode temperature
(whole °C, signed), 0x03 configuration (bit 2 enables the tach input, bit 4 clear selects PWM over DAC), 0x4A fan
configuration (bit 5 lets the fan-setting register drive the fan), 0x4B spin-up (bit 5 cleared), 0x4C fan setting
0-63, 0x46/0x47 tach count low/high (reading the low byte first latches the high one). RPM = 5 400 000 / count.
"""

ADDRESS = 0x4C
REG_INTERNAL_TEMP = 0x00
REG_EXTERNAL_TEMP = 0x01
REG_CONFIG = 0x03
REG_TACH_LOW = 0x46
REG_TACH_HIGH = 0x47
REG_FAN_CONFIG = 0x4A
REG_SPIN_UP = 0x4B
REG_FAN_SETTING = 0x4C
SETTING_MAX = 63
TACH_STALLED = 0xFFFF  # the count saturates when the fan stops
RPM_FACTOR = 5_400_000


def setting_for(percent: int) -> int:
    """The fan-setting register value (0-63) for ``percent`` (0-100)."""
    return max(0, min(100, percent)) * SETTING_MAX // 100


def signed(b: int) -> int:
    """A register byte as a two's-complement number."""
    return b - 256 if b & 0x80 else b


class Emc2101:
    """The EMC2101 at ``address`` on ``i2c``; I2C failures raise ``OSError`` (the caller decides what to do)."""

    def __init__(self, i2c: object, address: int = ADDRESS) -> None:
        self.i2c = i2c
        self.address = address

    def _read(self, reg: int) -> int:
        return self.i2c.readfrom_mem(self.address, reg, 1)[0]

    def _write(self, reg: int, value: int) -> None:
        self.i2c.writeto_mem(self.address, reg, bytes((value,)))

    def init(self) -> None:
        """Tach input on, PWM output, fan driven by the setting register."""
        self._write(REG_CONFIG, (self._read(REG_CONFIG) | 0x04) & ~0x10 & 0xFF)
        self._write(REG_FAN_CONFIG, self._read(REG_FAN_CONFIG) | 0x20)
        self._write(REG_SPIN_UP, self._read(REG_SPIN_UP) & ~0x20 & 0xFF)

    def set_percent(self, percent: int) -> None:
        """Drive the fan at ``percent``."""
        self._write(REG_FAN_SETTING, setting_for(percent))

    def rpm(self) -> int:
        """The fan's speed; 0 when it is stopped."""
        low = self._read(REG_TACH_LOW)
        count = self._read(REG_TACH_HIGH) << 8 | low
        if count == 0 or count == TACH_STALLED:
            return 0
        return RPM_FACTOR // count

    def temperatures(self) -> dict:
        """``{"internal": °C, "external": °C}`` (whole degrees)."""
        return {
            "internal": signed(self._read(REG_INTERNAL_TEMP)),
            "external": signed(self._read(REG_EXTERNAL_TEMP)),
        }
