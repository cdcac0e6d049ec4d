"""Board profiles: which fan a board has, from the board name and chassis slot. ``[[fan]]`` tables override.

- ``compute-blade``: the smart fan unit if it answers on its UART, else the fan connector (``auto``). The
  standard fan unit (hardware PWM on GPIO12, tach on GPIO13) must be named in ``[[fan]]``: driving an unknown
  pin is not harmless, so it is never guessed.
- ``nanocluster``: slot 1 drives the chassis fan (GPIO13, 50 Hz); the other slots have no fan of their own.
- ``cm5-io-board``, ``pi5``, ``generic``: the official fan connector (the ``pwmfan`` hwmon).
- ``sim``: the simulator models its own fan.
"""

from __future__ import annotations

from nodeagent.hw.fans.base import PRESETS, FanConfig

NANOCLUSTER_FAN_SLOT = 1


def fans_for(board: str, slot: int) -> tuple[FanConfig, ...]:
    """The fans a ``board`` in ``slot`` drives by default."""
    if board == "compute-blade":
        return (FanConfig(backend="auto"),)
    if board == "nanocluster":
        return (PRESETS["nanocluster-slot1"],) if slot == NANOCLUSTER_FAN_SLOT else ()
    if board == "sim":
        return ()  # the simulator models its own fan
    return (PRESETS["pi5-fan-connector"],)


def fan_source(configured: tuple[FanConfig, ...], board: str, slot: int) -> tuple[tuple[FanConfig, ...], str]:
    """The fans to use and where that choice came from, for ``check`` and the logs."""
    if configured:
        return configured, "configuration ([[fan]] tables)"
    where = f"board profile {board!r}" + (f", slot {slot}" if board == "nanocluster" else "")
    return fans_for(board, slot), where
