"""Settings of every policy: one frozen dataclass per TOML table ``[policy.fan]``, ``[policy.guard]``, … .

Each class checks its own values when it is built and raises ``ConfigError`` reading
``policy.<section>.<key>: expected …, got …``; the agent's config loader maps the tables onto these classes
with ``nodeagent.protocol.typecheck.build()`` (which checks the types) and adds the file name in front.
docs/policy.md lists the same keys and defaults (a test compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from nodeagent.errors import ConfigError
from nodeagent.protocol.topics import NAME_RE


def _require(section: str, checks: Iterable[tuple[str, bool, str, object]]) -> None:
    """Raise ConfigError for the first ``(key, ok, expected, got)`` whose ``ok`` is false."""
    for key, ok, expected, got in checks:
        if not ok:
            raise ConfigError(f"policy.{section}.{key}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class FanPoint:
    """One point of the fan curve: at ``temp_c`` the fan runs at ``duty_pct``."""

    temp_c: float
    duty_pct: float


# The Raspberry Pi 5 / CM5 firmware's trip points for the official fan (cooling-levels 75/125/175/250 of 255).
DEFAULT_FAN_POINTS = (FanPoint(50.0, 30.0), FanPoint(60.0, 50.0), FanPoint(67.5, 70.0), FanPoint(75.0, 100.0))


@dataclass(frozen=True)
class FanCurveConfig:
    """[policy.fan]: the fan curve, its hysteresis and how fast the duty may change."""

    points: tuple[FanPoint, ...] = DEFAULT_FAN_POINTS
    below_first: Literal["off", "first"] = "off"  # below the first point: 0 % ("off") or the first point's duty
    min_duty_pct: float = 0.0  # floor of the automatic duty: above 0, the fan never stops
    hysteresis_c: float = 5.0
    max_rise_pct_per_s: float = 100.0
    max_fall_pct_per_s: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        _require("fan", [("points", len(self.points) >= 1, "at least one point", "none")])
        _require("fan", _point_checks(self.points))
        _require(
            "fan",
            [
                ("below_first", self.below_first in ("off", "first"), 'one of "off", "first"', self.below_first),
                ("min_duty_pct", 0.0 <= self.min_duty_pct <= 100.0, "a number from 0 to 100", self.min_duty_pct),
                ("hysteresis_c", self.hysteresis_c >= 0.0, "a number at least 0", self.hysteresis_c),
                ("max_rise_pct_per_s", self.max_rise_pct_per_s > 0.0, "a number above 0", self.max_rise_pct_per_s),
                ("max_fall_pct_per_s", self.max_fall_pct_per_s > 0.0, "a number above 0", self.max_fall_pct_per_s),
            ],
        )


def _point_checks(points: tuple[FanPoint, ...]) -> Iterable[tuple[str, bool, str, object]]:
    for i, p in enumerate(points):
        yield f"points[{i}].duty_pct", 0.0 <= p.duty_pct <= 100.0, "a number from 0 to 100", p.duty_pct
        if i == 0:
            yield f"points[{i}].temp_c", p.temp_c == p.temp_c, "a number", p.temp_c  # not NaN
            continue
        prev = points[i - 1]
        yield (
            f"points[{i}].temp_c",
            p.temp_c > prev.temp_c,
            f"a number above {prev.temp_c} (the previous point)",
            p.temp_c,
        )
        yield (
            f"points[{i}].duty_pct",
            p.duty_pct >= prev.duty_pct,
            f"a number at least {prev.duty_pct} (the previous point)",
            p.duty_pct,
        )


@dataclass(frozen=True)
class GuardConfig:
    """[policy.guard]: the thermal guard's levels (warm: fan full; hot: job frozen; critical: job stopped)."""

    warm_c: float = 70.0
    warm_exit_c: float = 67.0
    hot_c: float = 80.0
    resume_c: float = 72.0
    critical_c: float = 85.0
    clear_c: float = 65.0
    clear_after_s: float = 300.0

    def __post_init__(self) -> None:
        _require(
            "guard",
            [
                (
                    "warm_exit_c",
                    self.warm_exit_c < self.warm_c,
                    f"a number below warm_c ({self.warm_c})",
                    self.warm_exit_c,
                ),
                ("hot_c", self.hot_c > self.warm_c, f"a number above warm_c ({self.warm_c})", self.hot_c),
                ("resume_c", self.resume_c < self.hot_c, f"a number below hot_c ({self.hot_c})", self.resume_c),
                ("critical_c", self.critical_c > self.hot_c, f"a number above hot_c ({self.hot_c})", self.critical_c),
                (
                    "clear_c",
                    self.clear_c < self.critical_c,
                    f"a number below critical_c ({self.critical_c})",
                    self.clear_c,
                ),
                ("clear_after_s", self.clear_after_s >= 0.0, "a number at least 0", self.clear_after_s),
            ],
        )


@dataclass(frozen=True)
class GateConfig:
    """[policy.gate]: when a node may start a job."""

    start_max_c: float = 65.0
    aer_correctable_per_min: float = 10.0

    def __post_init__(self) -> None:
        _require(
            "gate",
            [
                ("start_max_c", self.start_max_c == self.start_max_c, "a number", self.start_max_c),
                (
                    "aer_correctable_per_min",
                    self.aer_correctable_per_min >= 0.0,
                    "a number at least 0",
                    self.aer_correctable_per_min,
                ),
            ],
        )


@dataclass(frozen=True)
class PowerConfig:
    """[policy.power]: the chassis power budget, the per-node estimates and the frequency cap's pace."""

    enabled: bool = True  # on the chassis's driver: admit heavy jobs by budget and cap frequencies
    budget_w: float = 60.0
    base_w: float = 3.6
    node_idle_w: float = 4.0
    node_heavy_w: float = 10.0
    step_interval_s: float = 5.0
    restore_margin_w: float = 5.0
    min_freq_khz: int = 1_500_000
    driver: str = "auto"  # whose decisions count: a node id, or auto (the one node whose facts carry "chassis")

    def __post_init__(self) -> None:
        _require(
            "power",
            [
                (
                    "driver",
                    self.driver == "auto" or bool(NAME_RE.match(self.driver)),
                    "\"auto\" or a node id (1-64 letters, digits, '-' or '_')",
                    self.driver,
                ),
                ("budget_w", self.budget_w > 0.0, "a number above 0", self.budget_w),
                ("base_w", self.base_w >= 0.0, "a number at least 0", self.base_w),
                ("node_idle_w", self.node_idle_w >= 0.0, "a number at least 0", self.node_idle_w),
                (
                    "node_heavy_w",
                    self.node_heavy_w >= self.node_idle_w,
                    "a number at least node_idle_w",
                    self.node_heavy_w,
                ),
                ("step_interval_s", self.step_interval_s > 0.0, "a number above 0", self.step_interval_s),
                (
                    "restore_margin_w",
                    0.0 <= self.restore_margin_w < self.budget_w,
                    f"a number from 0 to below budget_w ({self.budget_w})",
                    self.restore_margin_w,
                ),
                ("min_freq_khz", self.min_freq_khz > 0, "a whole number above 0", self.min_freq_khz),
            ],
        )


@dataclass(frozen=True)
class ChassisConfig:
    """[policy.chassis]: the shared chassis fan (NanoCluster, driven from slot 1)."""

    stale_after_s: float = 5.0
    role: Literal["auto", "on", "off"] = "auto"  # auto: a NanoCluster node in slot 1 drives the chassis fan
    forget_offline_s: float = 300.0  # an offline node counts as hot this long, then it is forgotten

    def __post_init__(self) -> None:
        _require(
            "chassis",
            [
                ("stale_after_s", self.stale_after_s > 0.0, "a number above 0", self.stale_after_s),
                ("forget_offline_s", self.forget_offline_s >= 0.0, "a number at least 0", self.forget_offline_s),
            ],
        )


@dataclass(frozen=True)
class AutoCycleConfig:
    """[policy.auto_cycle]: power-cycle a node that stays offline (slot power, from the chassis's slot 1)."""

    enabled: bool = False
    offline_after_s: float = 600.0  # offline this long before the first try
    backoff_s: float = 600.0  # wait after the first try; doubled after every further one
    max_tries: int = 3  # then give up (one event) until the node has been online again

    def __post_init__(self) -> None:
        _require(
            "auto_cycle",
            [
                ("offline_after_s", self.offline_after_s > 0.0, "a number above 0", self.offline_after_s),
                ("backoff_s", self.backoff_s > 0.0, "a number above 0", self.backoff_s),
                ("max_tries", self.max_tries >= 1, "a whole number at least 1", self.max_tries),
            ],
        )


@dataclass(frozen=True)
class PolicyConfig:
    """[policy]: every policy's settings, one sub-table each."""

    fan: FanCurveConfig = field(default_factory=FanCurveConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    chassis: ChassisConfig = field(default_factory=ChassisConfig)
    auto_cycle: AutoCycleConfig = field(default_factory=AutoCycleConfig)


# TOML table name under [policy] -> its dataclass (for the config loader and the docs test).
SECTIONS: dict[str, type] = {
    "fan": FanCurveConfig,
    "guard": GuardConfig,
    "gate": GateConfig,
    "power": PowerConfig,
    "chassis": ChassisConfig,
    "auto_cycle": AutoCycleConfig,
}
