"""The only module that touches the RP2040: pins, UARTs, I2C, PWM, the LED bitstream and the watchdog.

Everything here is a thin call into MicroPython's ``machine`` module; what to do with it lives in ``app`` and
``control``. The host tests import this module with a stand-in ``machine`` (tests/firmware/fake_machine.py).
"""

import machine

from fanunit.emc2101 import Emc2101
from fanunit.tach import PulseCounter

WS2812_TIMING_NS = (400, 850, 800, 450)  # a 0 bit high/low, then a 1 bit high/low: 800 kHz WS2812 timing
DUTY_MAX = 65535  # machine.PWM.duty_u16 full scale


class EmcFan:
    """The stock unit's fan: an EMC2101 on I2C drives it and counts its tach, and reads two temperatures."""

    def __init__(self, cfg: object) -> None:
        pin = machine.Pin
        i2c = machine.I2C(cfg.I2C_ID, sda=pin(cfg.I2C_SDA_PIN), scl=pin(cfg.I2C_SCL_PIN), freq=cfg.I2C_FREQ_HZ)
        self.chip = Emc2101(i2c, cfg.EMC2101_ADDRESS)
        self._ready = False

    def set_percent(self, percent: int) -> None:
        if not self._ready:  # (again) after a failure: the chip may have lost its configuration with it
            self.chip.init()
            self._ready = True
        try:
            self.chip.set_percent(percent)
        except OSError:
            self._ready = False
            raise

    def rpm(self, _now_ms: int) -> int | None:
        return self.chip.rpm()

    def temperatures(self) -> dict:
        return self.chip.temperatures()


class PwmFan:
    """A fan on an RP2040 PWM pin, with its tach (optional) counted by a pin interrupt."""

    def __init__(self, cfg: object, now_ms: int) -> None:
        if cfg.FAN_PWM_PIN is None:
            raise ValueError("config.py: FAN_DRIVER = 'pwm' needs FAN_PWM_PIN (the RP2040 pin wired to the fan)")
        pin = machine.Pin
        self.pwm = machine.PWM(pin(cfg.FAN_PWM_PIN))
        self.pwm.freq(cfg.FAN_PWM_FREQ_HZ)
        self.inverted = cfg.FAN_PWM_INVERTED
        self.tach = None
        if cfg.TACH_PIN is not None:
            self.tach = PulseCounter(cfg.TACH_PULSES_PER_REV, now_ms)
            self.tach_pin = pin(cfg.TACH_PIN, pin.IN, pin.PULL_UP)  # tach outputs are open collector
            self.tach_pin.irq(handler=self.tach.edge, trigger=pin.IRQ_FALLING)

    def set_percent(self, percent: int) -> None:
        duty = percent * DUTY_MAX // 100
        self.pwm.duty_u16(DUTY_MAX - duty if self.inverted else duty)

    def rpm(self, now_ms: int) -> int | None:
        return self.tach.rpm(now_ms) if self.tach is not None else None

    def temperatures(self) -> dict:
        return {}


class Board:
    """The unit's hardware as ``config`` describes it. Construction powers the fan; ``app`` then sets it to 100 %."""

    def __init__(self, cfg: object, now_ms: int) -> None:
        pin = machine.Pin
        self.fan_power = pin(cfg.FAN_POWER_PIN, pin.OUT, value=1)
        self.uarts = {}
        for name, uart_id, tx, rx, _sensor in cfg.LINKS:
            self.uarts[name] = machine.UART(
                uart_id, baudrate=cfg.UART_BAUD, tx=pin(tx), rx=pin(rx), timeout=0, rxbuf=cfg.UART_RXBUF
            )
        self.read_limit = cfg.READ_LIMIT
        if cfg.FAN_DRIVER == "emc2101":
            self.fan = EmcFan(cfg)
        elif cfg.FAN_DRIVER == "pwm":
            self.fan = PwmFan(cfg, now_ms)
        else:
            raise ValueError(f"config.py: FAN_DRIVER must be 'emc2101' or 'pwm', got {cfg.FAN_DRIVER!r}")
        self.led_pin = pin(cfg.LED_PIN, pin.OUT, value=0)
        self.button_pin = pin(cfg.BUTTON_PIN, pin.IN, pin.PULL_UP if cfg.BUTTON_ACTIVE_LOW else pin.PULL_DOWN)
        self.button_active = 0 if cfg.BUTTON_ACTIVE_LOW else 1
        self.status_pin = None if cfg.STATUS_LED_PIN is None else pin(cfg.STATUS_LED_PIN, pin.OUT, value=0)
        self.wdt = machine.WDT(timeout=cfg.WATCHDOG_MS) if cfg.WATCHDOG_MS else None

    def read(self, name: str) -> bytes:
        """What blade ``name`` sent since the last call (at most ``READ_LIMIT`` bytes); b"" when nothing."""
        return self.uarts[name].read(self.read_limit) or b""

    def write(self, name: str, data: bytes) -> None:
        self.uarts[name].write(data)

    def set_fan(self, percent: int) -> None:
        """Drive the fan at ``percent``; ``OSError`` when the controller does not answer."""
        self.fan.set_percent(percent)

    def rpm(self, now_ms: int) -> int | None:
        return self.fan.rpm(now_ms)

    def temperatures(self) -> dict:
        return self.fan.temperatures()

    def button_pressed(self) -> bool:
        return self.button_pin.value() == self.button_active

    def show_leds(self, data: bytes) -> None:
        machine.bitstream(self.led_pin, 0, WS2812_TIMING_NS, data)

    def set_status(self, on: bool) -> None:
        if self.status_pin is not None:
            self.status_pin.value(1 if on else 0)

    def feed(self) -> None:
        """Tell the hardware watchdog the loop is alive."""
        if self.wdt is not None:
            self.wdt.feed()

    def reset(self) -> None:
        """Reset the RP2040 (it boots with the fan at 100 %)."""
        machine.reset()
