"""The fan curve: temperature -> duty, with hysteresis on the way down and a limit on how fast the duty moves.

How the duty is chosen, every tick:

1. An unreadable temperature (``None`` or not a finite number) or ``force_full`` (the thermal guard's warm level
   and above, a lost broker on the chassis fan, …) gives 100 % at once — the literal maximum, no ramp.
2. An operator's fixed percent (``mode=42.0``) is used as given, at once.
3. Otherwise (``mode="auto"``) the curve is read at the *anchor*: the temperature that last raised the duty. The
   anchor follows the temperature up at once; on the way down it stays put until the temperature is more than
   ``hysteresis_c`` below it, and then trails ``hysteresis_c`` above the temperature. The duty then moves towards
   the curve's value no faster than ``max_rise_pct_per_s`` up and ``max_fall_pct_per_s`` down.

The anchor is tracked even while the duty is forced or fixed, so the curve picks up where the temperature is.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, TypeGuard

from nodeagent.policy.config import FanCurveConfig

FULL_PCT = 100.0

FanMode = Literal["auto"] | float
"""``"auto"`` follows the curve; a number is the operator's fixed duty in percent (clamped to 0–100)."""


@dataclass(frozen=True)
class FanState:
    """What the fan policy remembers between ticks. Start with ``FanState()``."""

    duty_pct: float | None = None  # the duty set last time (None before the first tick)
    anchor_c: float | None = None  # the temperature that set the curve's duty (the hysteresis reference)
    t: float | None = None  # when duty_pct was set


def readable(temp_c: float | None) -> TypeGuard[float]:
    """Whether ``temp_c`` is a usable reading (not None, not NaN, not infinite)."""
    return temp_c is not None and math.isfinite(temp_c)


def curve_duty(temp_c: float, cfg: FanCurveConfig) -> float:
    """The curve's duty at ``temp_c``: linear between points, flat beyond the last, and below the first either
    0 % or the first point's duty (``below_first``); never below ``min_duty_pct``."""
    points = cfg.points
    if temp_c < points[0].temp_c:
        duty = 0.0 if cfg.below_first == "off" else points[0].duty_pct
    elif temp_c >= points[-1].temp_c:
        duty = points[-1].duty_pct
    else:
        lo, hi = next((a, b) for a, b in itertools.pairwise(points) if temp_c < b.temp_c)
        duty = lo.duty_pct + (temp_c - lo.temp_c) / (hi.temp_c - lo.temp_c) * (hi.duty_pct - lo.duty_pct)
    return max(duty, cfg.min_duty_pct)


def hold_anchor(anchor_c: float | None, temp_c: float, hysteresis_c: float) -> float:
    """The new anchor: up with the temperature at once; down only to stay within ``hysteresis_c`` of it."""
    if anchor_c is None:
        return temp_c
    return min(max(anchor_c, temp_c), temp_c + hysteresis_c)


def rate_limited(target_pct: float, state: FanState, cfg: FanCurveConfig, now: float) -> float:
    """``target_pct``, or as close to it as the rise/fall limits allow since the last tick.

    The first tick (no previous duty) takes the target at once. A clock that went backwards counts as no time.
    """
    if state.duty_pct is None or state.t is None:
        return target_pct
    dt = max(0.0, now - state.t)
    lowest = state.duty_pct - cfg.max_fall_pct_per_s * dt
    highest = state.duty_pct + cfg.max_rise_pct_per_s * dt
    return min(max(target_pct, lowest), highest)


def _fixed(mode: object) -> float:
    """The operator's fixed duty, clamped to 0–100; anything that is not a finite number is full (fail safe)."""
    if isinstance(mode, bool) or not isinstance(mode, (int, float)) or not math.isfinite(mode):
        return FULL_PCT
    return min(max(float(mode), 0.0), FULL_PCT)


def fan_duty(
    temp_c: float | None,
    state: FanState,
    cfg: FanCurveConfig,
    now: float,
    *,
    mode: FanMode = "auto",
    force_full: bool = False,
) -> tuple[float, FanState]:
    """The fan duty in percent for this tick, and the state to pass next time.

    ``temp_c``: the SoC temperature, ``None`` when it could not be read (-> 100 %). ``now``: seconds on any
    steady clock (only differences are used). ``mode``: ``"auto"`` or the operator's fixed percent.
    ``force_full``: set when the thermal guard says the fan must run full (warm and above); it wins over ``mode``.
    """
    if not readable(temp_c):
        return FULL_PCT, FanState(duty_pct=FULL_PCT, anchor_c=state.anchor_c, t=now)
    anchor = hold_anchor(state.anchor_c, temp_c, cfg.hysteresis_c)
    if force_full:
        duty = FULL_PCT
    elif mode != "auto":
        duty = _fixed(mode)
    else:
        duty = rate_limited(curve_duty(anchor, cfg), state, cfg, now)
    return duty, FanState(duty_pct=duty, anchor_c=anchor, t=now)
