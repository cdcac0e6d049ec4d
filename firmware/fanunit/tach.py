"""A fan tachometer read by counting pulses: the interrupt counts, ``rpm()`` turns counts into a speed."""


def rpm_from_pulses(pulses: int, elapsed_ms: int, pulses_per_rev: int = 2) -> int:
    """Revolutions per minute from ``pulses`` counted over ``elapsed_ms`` (PC fans give 2 pulses a turn)."""
    if elapsed_ms <= 0:
        raise ValueError(f"elapsed_ms must be above 0, got {elapsed_ms!r}")
    return pulses * 60_000 // (elapsed_ms * pulses_per_rev)


class PulseCounter:
    """Counts edges (``edge()`` is the pin's interrupt handler) and reads them as RPM over each report period."""

    def __init__(self, pulses_per_rev: int, now_ms: int) -> None:
        self.pulses_per_rev = pulses_per_rev
        self.pulses = 0
        self._since_ms = now_ms

    def edge(self, _pin: object = None) -> None:
        """One tach pulse. Runs in interrupt context: no allocation beyond a small int."""
        self.pulses += 1

    def rpm(self, now_ms: int) -> int | None:
        """The speed since the last call (None when no time has passed), and start a new count."""
        elapsed = now_ms - self._since_ms
        if elapsed <= 0:
            return None
        pulses, self.pulses = self.pulses, 0
        self._since_ms = now_ms
        return rpm_from_pulses(pulses, elapsed, self.pulses_per_rev)
