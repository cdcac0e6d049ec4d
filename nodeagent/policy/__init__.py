"""Pure decisions that keep a node safe: fan curve, thermal guard, health gate, power budget, chassis fan.

Every function here is a function of (inputs, state, config, now) and nothing else: no I/O, no clock reads, no
logging, no sleeping. Inputs are small frozen dataclasses defined next to each policy (the hardware layer is
never imported), states are frozen dataclasses the caller keeps and passes back, and ``now`` is seconds on the
caller's clock. docs/policy.md explains each decision and lists every setting.
"""

from nodeagent.policy.chassis import ChassisSelf, ChassisState, NodeHeat, chassis_duty
from nodeagent.policy.config import (
    ChassisConfig,
    FanCurveConfig,
    FanPoint,
    GateConfig,
    GuardConfig,
    PolicyConfig,
    PowerConfig,
)
from nodeagent.policy.fan import FULL_PCT, FanMode, FanState, curve_duty, fan_duty
from nodeagent.policy.health_gate import Admission, AerIncrease, HealthInput, admit_job, refusal_reasons
from nodeagent.policy.power_budget import (
    NodePower,
    NodeReading,
    PowerEvent,
    PowerState,
    admit_against,
    admit_heavy,
    admit_light,
    cap_frequency,
    chassis_load_w,
    chassis_power_w,
    default_estimate,
)
from nodeagent.policy.thermal_guard import GuardDecision, GuardEvent, GuardState, Level, clear, guard

__all__ = [
    "FULL_PCT",
    "Admission",
    "AerIncrease",
    "ChassisConfig",
    "ChassisSelf",
    "ChassisState",
    "FanCurveConfig",
    "FanMode",
    "FanPoint",
    "FanState",
    "GateConfig",
    "GuardConfig",
    "GuardDecision",
    "GuardEvent",
    "GuardState",
    "HealthInput",
    "Level",
    "NodeHeat",
    "NodePower",
    "NodeReading",
    "PolicyConfig",
    "PowerConfig",
    "PowerEvent",
    "PowerState",
    "admit_against",
    "admit_heavy",
    "admit_job",
    "admit_light",
    "cap_frequency",
    "chassis_duty",
    "chassis_load_w",
    "chassis_power_w",
    "clear",
    "curve_duty",
    "default_estimate",
    "fan_duty",
    "guard",
    "refusal_reasons",
]
