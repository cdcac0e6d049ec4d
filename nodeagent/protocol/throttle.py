"""The get_throttled word (``vcgencmd get_throttled``, or the firmware's sysfs file): one table of its bits for
every room that reads it. The hardware reads the word, telemetry carries it raw (``Telemetry.throttled``), and the
health gate, Home Assistant, Prometheus and piclusterctl judge it by these names and masks.
"""

from __future__ import annotations

# The "now" bits; each has a sticky "since boot" twin ``OCCURRED`` bits higher.
UNDER_VOLTAGE = 0
FREQ_CAPPED = 1
THROTTLED = 2
SOFT_TEMP_LIMIT = 3
OCCURRED = 16

# Names are what telemetry (``Telemetry.throttle``), the CLI and the Prometheus labels show.
THROTTLE_BITS: dict[int, str] = {
    UNDER_VOLTAGE: "under_voltage",
    FREQ_CAPPED: "freq_capped",
    THROTTLED: "throttled",
    SOFT_TEMP_LIMIT: "soft_temp_limit",
    UNDER_VOLTAGE + OCCURRED: "under_voltage_occurred",
    FREQ_CAPPED + OCCURRED: "freq_capped_occurred",
    THROTTLED + OCCURRED: "throttled_occurred",
    SOFT_TEMP_LIMIT + OCCURRED: "soft_temp_limit_occurred",
}
NOW_MASK = 0xF  # bits 0-3: happening now
STICKY_MASK = NOW_MASK << OCCURRED  # bits 16-19: happened since boot
KNOWN_MASK = sum(1 << b for b in THROTTLE_BITS)
# Throttling now other than under-voltage (capped, throttled, soft limit): what "throttled" means to an operator.
THROTTLING_MASK = NOW_MASK & ~(1 << UNDER_VOLTAGE)


def decode_throttled(bits: int) -> tuple[str, ...]:
    """Names of the set get_throttled bits, lowest bit first; an unknown bit shows as ``bit<N>``."""
    return tuple(THROTTLE_BITS.get(bit, f"bit{bit}") for bit in range(32) if bits >> bit & 1)


def now_and_since(bit: int) -> int:
    """The mask of a "now" bit and its sticky twin (what a simulated condition sets)."""
    return 1 << bit | 1 << (bit + OCCURRED)


def throttled_now(bits: int | None) -> bool:
    """Whether any "now" bit is set (under-voltage included); False when the word is unknown."""
    return bool((bits or 0) & NOW_MASK)
