"""Every pin, address and timing of the fan-unit firmware: edit here (before copying to the unit), nowhere else.

Pins are RP2040 GPIO numbers. Values marked UNCONFIRMED come from reading the unit's stock firmware and docs, not
from a unit on the bench (firmware/README.md says what was tried: nothing on hardware yet).
"""

# The two blades, one UART each: (name, UART id, TX pin, RX pin, temperature the blade is sent).
# UNCONFIRMED: UART0 on GP0/GP1 is the TinyGo pico default the stock firmware builds with; Uptime's pin table
# says "GPIO1 RX, GPIO2 TX", which no RP2040 UART0 can be (GP2 is UART0's CTS), so it is read as board pins 1/2.
LINKS = (
    ("left", 0, 0, 1, "internal"),
    ("right", 1, 8, 9, "external"),
)
UART_BAUD = 115200
UART_RXBUF = 512  # bytes the UART driver buffers between loops
READ_LIMIT = 256  # at most this many bytes per blade per loop: a flooded line cannot starve the other blade

# Blades that must be speaking for the fan to follow requests. A unit serving one blade lists only that one;
# one that never hears an expected blade keeps the fan at 100 % (the safe side).
EXPECTED_LINKS = ("left", "right")
HEARTBEAT_TIMEOUT_MS = 10_000  # no valid frame for this long: fan 100 %, LED red, failsafe event on next contact

REPORT_INTERVAL_MS = 2_000  # RPM and airflow temperature to each blade (the agent expects 2 s)
LOOP_INTERVAL_MS = 20
FAN_REASSERT_MS = 2_000  # re-send the duty this often even when unchanged (a controller that reset forgets it)

# Fan: "emc2101" (the stock unit: an EMC2101 on I2C drives PWM and reads the tach) or "pwm" (an RP2040 pin
# drives PWM and another counts tach pulses, for a unit or board wired that way).
FAN_DRIVER = "emc2101"
FAN_POWER_PIN = 16  # fan power enable, driven high at boot (the stock firmware: "DO NOT CHANGE")
I2C_ID = 0
I2C_SDA_PIN = 4
I2C_SCL_PIN = 5
I2C_FREQ_HZ = 100_000
EMC2101_ADDRESS = 0x4C
I2C_ERRORS_BEFORE_RESET = 5  # consecutive I2C failures, then reset the RP2040 (the stock firmware's lock-up cure)
FAN_PWM_PIN = None  # "pwm" driver only: UNCONFIRMED, no source gives an RP2040 pin wired to the fan's PWM input
FAN_PWM_FREQ_HZ = 25_000  # what 4-pin PC fans expect
FAN_PWM_INVERTED = False  # True when the fan runs at full with the signal low (an open-drain stage)
TACH_PIN = None  # "pwm" driver only: UNCONFIRMED, as FAN_PWM_PIN
TACH_PULSES_PER_REV = 2

# LEDs: WS2812s on one pin; LED_CHAIN names the blade of each LED, first in the chain first.
LED_PIN = 15
LED_CHAIN = ("right", "left")  # the stock firmware writes the right blade's LED first
LED_BYTE_ORDER = "GRB"  # the WS2812 datasheet order; UNCONFIRMED for the unit's LEDs
FAILSAFE_RGB = (255, 0, 0)
STATUS_LED_PIN = 25  # on while some blade is in failsafe; None for no status LED

# Button: one press goes to the first blade of BUTTON_TARGETS, two (or more) to the second.
BUTTON_PIN = 12
BUTTON_ACTIVE_LOW = True  # pulled up, pressed = low (the stock firmware triggers on the falling edge)
BUTTON_DEBOUNCE_MS = 30
BUTTON_WINDOW_MS = 600
BUTTON_TARGETS = ("left", "right")

# The RP2040's hardware watchdog: resets the chip if the loop stalls this long (0 = off; at most 8388 ms).
WATCHDOG_MS = 5_000
