"""The unit's button: debounced presses, counted in bursts (one press for the left blade, two for the right).

Sampled, not interrupt-driven: ``app`` calls ``sample()`` every loop (about every 20 ms), which is plenty for a
finger and keeps contact bounce out of any interrupt handler.
"""


class PressCounter:
    """Counts presses of a bouncing button; a burst ends ``window_ms`` after its first press.

    A level change counts only once it has held for ``debounce_ms``. ``sample()`` returns the number of presses of
    a burst when it ends, else 0.
    """

    def __init__(self, debounce_ms: int = 30, window_ms: int = 600) -> None:
        self.debounce_ms = debounce_ms
        self.window_ms = window_ms
        self._level = False  # the debounced state: pressed or not
        self._raw = False
        self._raw_since_ms = 0
        self._burst_start_ms = None
        self._presses = 0

    def sample(self, pressed: bool, now_ms: int) -> int:
        """Feed the button's level at ``now_ms``; the press count of a burst that ended, or 0."""
        if pressed != self._raw:
            self._raw = pressed
            self._raw_since_ms = now_ms
        if self._raw != self._level and now_ms - self._raw_since_ms >= self.debounce_ms:
            self._level = self._raw
            if self._level:
                if self._burst_start_ms is None:
                    self._burst_start_ms = now_ms
                self._presses += 1
        if self._burst_start_ms is not None and now_ms - self._burst_start_ms >= self.window_ms:
            presses = self._presses
            self._burst_start_ms = None
            self._presses = 0
            return presses
        return 0


def target(presses: int, targets: tuple) -> str:
    """The blade a burst of ``presses`` is for: ``targets[presses - 1]``, the last one for more presses."""
    return targets[min(presses, len(targets)) - 1]
