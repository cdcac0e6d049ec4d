"""The thermal guard: what a node must do at each temperature, above what the fan curve already does.

Levels (defaults for a CM5, whose firmware throttles from 80 °C and holds 85 °C; see docs/policy.md):

- ``normal``: nothing to do.
- ``warm`` (from ``warm_c``, until below ``warm_exit_c``): the fan runs full.
- ``hot`` (from ``hot_c``, until below ``resume_c``): the running job is frozen (SIGSTOP) and no heavy job starts.
- ``critical`` (from ``critical_c``): the running job is stopped on every tick the temperature is at or above
  ``critical_c``, and the node is *latched*: fan full and no heavy job until an operator calls ``clear()`` or
  the temperature has stayed below ``clear_c`` for ``clear_after_s``.

An unreadable sensor is not a temperature: the fan runs full, the job is frozen (not stopped: a sensor glitch
must not throw away an hour of HPL) and heavy jobs are refused, with the event ``sensor_lost``. The level is
held at ``hot`` (or ``critical``) meanwhile, so once the sensor is back the job resumes only below ``resume_c``.

Every change yields one ``GuardEvent`` carrying the levels from/to, the reading and the threshold crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from nodeagent.policy.config import GuardConfig
from nodeagent.policy.fan import readable

Level = Literal["normal", "warm", "hot", "critical"]
LEVELS: tuple[Level, ...] = ("normal", "warm", "hot", "critical")
EventKind = Literal["level_up", "level_down", "sensor_lost", "sensor_restored", "cleared", "auto_cleared"]
EVENT_KINDS: tuple[EventKind, ...] = (
    "level_up",
    "level_down",
    "sensor_lost",
    "sensor_restored",
    "cleared",
    "auto_cleared",
)


@dataclass(frozen=True)
class GuardEvent:
    """One change of the guard. ``temp_c`` is the reading that caused it (``None`` when the sensor was lost);
    ``threshold_c`` the configured temperature it crossed (``None`` for sensor and operator events)."""

    kind: EventKind
    from_level: Level
    to_level: Level
    temp_c: float | None
    threshold_c: float | None
    t: float


@dataclass(frozen=True)
class GuardState:
    """What the guard remembers between ticks. Start with ``GuardState()``."""

    level: Level = "normal"
    latched: bool = False  # a critical temperature was seen and has not been cleared
    sensor_lost: bool = False
    below_clear_since: float | None = None  # while latched: since when the temperature is below clear_c
    last_temp_c: float | None = None


@dataclass(frozen=True)
class GuardDecision:
    """What the agent must do this tick. ``stop_job`` wins over ``freeze_job`` when both are set."""

    level: Level
    fan_full: bool
    freeze_job: bool
    stop_job: bool
    refuse_heavy: bool
    events: tuple[GuardEvent, ...]
    state: GuardState


def _rank(level: Level) -> int:
    return LEVELS.index(level)


def _entry_rank(temp_c: float, cfg: GuardConfig) -> int:
    """The level a node reaches at ``temp_c`` on the way up."""
    return sum(temp_c >= limit for limit in (cfg.warm_c, cfg.hot_c, cfg.critical_c))


def _hold_rank(temp_c: float, cfg: GuardConfig) -> int:
    """The highest level a node may keep at ``temp_c`` on the way down."""
    if temp_c >= cfg.critical_c:
        return 3
    if temp_c >= cfg.resume_c:
        return 2
    return 1 if temp_c >= cfg.warm_exit_c else 0


def next_level(temp_c: float, previous: Level, cfg: GuardConfig) -> Level:
    """The level at ``temp_c`` coming from ``previous``: up at the entry thresholds, down at the exit ones."""
    return LEVELS[max(_entry_rank(temp_c, cfg), min(_rank(previous), _hold_rank(temp_c, cfg)))]


def _threshold(before: Level, after: Level, cfg: GuardConfig) -> float:
    """The threshold crossed: the entry of the level reached going up, the exit of the level left going down."""
    if _rank(after) > _rank(before):
        return {"warm": cfg.warm_c, "hot": cfg.hot_c, "critical": cfg.critical_c}[after]
    return {"warm": cfg.warm_exit_c, "hot": cfg.resume_c, "critical": cfg.critical_c}[before]


def _decide(state: GuardState, stop: bool, events: list[GuardEvent]) -> GuardDecision:
    frozen = state.sensor_lost or _rank(state.level) >= _rank("hot")
    return GuardDecision(
        level=state.level,
        fan_full=state.sensor_lost or state.latched or _rank(state.level) >= _rank("warm"),
        freeze_job=frozen,
        stop_job=stop,
        refuse_heavy=frozen or state.latched,
        events=tuple(events),
        state=state,
    )


def _lost(state: GuardState, now: float) -> GuardDecision:
    level = LEVELS[max(_rank(state.level), _rank("hot"))]
    events = [] if state.sensor_lost else [GuardEvent("sensor_lost", state.level, level, None, None, now)]
    new = replace(state, level=level, sensor_lost=True, below_clear_since=None)
    return _decide(new, False, events)


def guard(temp_c: float | None, state: GuardState, cfg: GuardConfig, now: float) -> GuardDecision:
    """Decide this tick from the SoC temperature (``None``: unreadable). ``now``: seconds on a steady clock."""
    if not readable(temp_c):
        return _lost(state, now)
    level = next_level(temp_c, state.level, cfg)
    latched = state.latched or level == "critical"
    since = state.below_clear_since if state.below_clear_since is not None else now
    since = since if latched and temp_c < cfg.clear_c else None
    events = []
    if state.sensor_lost:
        events.append(GuardEvent("sensor_restored", state.level, level, temp_c, None, now))
    elif level != state.level:
        kind: EventKind = "level_up" if _rank(level) > _rank(state.level) else "level_down"
        events.append(GuardEvent(kind, state.level, level, temp_c, _threshold(state.level, level, cfg), now))
    if since is not None and now - since >= cfg.clear_after_s:
        latched, since = False, None
        events.append(GuardEvent("auto_cleared", level, level, temp_c, cfg.clear_c, now))
    new = GuardState(level=level, latched=latched, sensor_lost=False, below_clear_since=since, last_temp_c=temp_c)
    return _decide(new, temp_c >= cfg.critical_c, events)


def clear(state: GuardState, now: float) -> tuple[GuardState, tuple[GuardEvent, ...]]:
    """The operator's all-clear after a critical temperature: heavy jobs may start again.

    Returns the new state and a ``cleared`` event (none if nothing was latched). If the node is still at or above
    ``critical_c``, the next ``guard()`` call latches it again.
    """
    if not state.latched:
        return state, ()
    event = GuardEvent("cleared", state.level, state.level, state.last_temp_c, None, now)
    return replace(state, latched=False, below_clear_since=None), (event,)
