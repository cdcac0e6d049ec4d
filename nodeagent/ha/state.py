"""The JSON state Home Assistant reads (pure): telemetry -> one flat-ish document, and when it is worth sending.

Every discovery template reads a path of this document (``nodeagent.ha.discovery``); a test checks that each
path exists for any telemetry. Values a node cannot read are ``null``, which HA shows as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodeagent.protocol import Telemetry
from nodeagent.protocol.throttle import THROTTLING_MASK, UNDER_VOLTAGE

# A change of any of these publishes the state at once: they are what an automation reacts to.
DISCRETE = (
    "guard",
    "fan_mode",
    "job",
    "job_frozen",
    "throttled",
    "under_voltage",
    "last_hpl_gflops",
    "drives",
    "nvme_problem",
    "pcie",
)


def fan_mode_option(mode: str) -> str:
    """Telemetry's fan mode ("auto", "30.0") as the select's option text ("auto", "30")."""
    try:
        pct = float(mode)
    except ValueError:
        return mode
    return str(int(pct)) if pct.is_integer() else repr(pct)


def state_document(telemetry: Telemetry, last_hpl_gflops: float | None) -> dict[str, Any]:
    """The state JSON of one tick."""
    t = telemetry
    bits = t.throttled
    mem_used = (
        round(100.0 * (t.mem_total_mb - t.mem_avail_mb) / t.mem_total_mb, 1)
        if t.mem_total_mb and t.mem_avail_mb is not None
        else None
    )
    aer: dict[str, int | None] = {"correctable": None, "nonfatal": None, "fatal": None}
    aer_types: dict[str, dict[str, Any]] = {s: {} for s in aer}
    for dev in t.pcie:
        for severity, types in dev.aer_types.items():
            if severity not in aer_types:
                continue
            kinds = aer_types[severity]
            for name, n in types.items():
                kinds[name] = kinds.get(name, 0) + n
            kinds.setdefault("devices", {})[dev.device] = dict(types)
        for severity, count in (
            ("correctable", dev.aer_correctable),
            ("nonfatal", dev.aer_nonfatal),
            ("fatal", dev.aer_fatal),
        ):
            if count is not None:
                aer[severity] = (aer[severity] or 0) + count
    return {
        "node": t.node,
        "t": round(t.t, 3),
        "temp_c": _round(t.temp_c, 1),
        "freq_mhz": _round(t.freq_mhz, 0),
        "load1": _round(t.load1, 2),
        "mem_used_pct": mem_used,
        "mem_avail_mb": t.mem_avail_mb,
        "fan_duty_pct": _round(t.fan_duty_pct, 1),
        "fan_rpm": t.fan_rpm,
        "power_w": _round(t.power_w, 2),
        "throttled": None if bits is None else bool(bits & THROTTLING_MASK),
        "under_voltage": None if bits is None else bool(bits >> UNDER_VOLTAGE & 1),
        "guard": t.guard,
        "fan_mode": fan_mode_option(t.fan_mode),
        "job": t.job,
        "job_frozen": t.job_frozen,
        "last_hpl_gflops": _round(last_hpl_gflops, 2),
        "nvme": {
            d.device: {
                "temp_c": _round(d.temp_c, 1) if d.present else None,
                "percentage_used_pct": d.percentage_used_pct if d.present else None,
                "available_spare_pct": d.available_spare_pct if d.present else None,
                "media_errors": d.media_errors if d.present else None,
                # A drive that vanished is a problem too; SMART not read yet is unknown.
                "critical_warning": (d.critical_warning != 0 if d.smart_t is not None else None) if d.present else True,
            }
            for d in t.nvme
        },
        "aer": aer,
        # Each AER entity's attributes: the error types above zero summed over the devices ("BadTLP": 46), and
        # per device under "devices" ({"0001:00:00.0": {"BadTLP": 41}}).
        "aer_types": aer_types,
        "errors": len(t.errors),
    }


def drives(state: Mapping[str, Any]) -> tuple[str, ...]:
    """The NVMe drives a state document has (its discovery document names the same)."""
    return tuple(state["nvme"])


def has_pcie(state: Mapping[str, Any]) -> bool:
    return any(v is not None for v in state["aer"].values())


def significant(before: Mapping[str, Any] | None, after: Mapping[str, Any], temp_c: float) -> bool:
    """Whether ``after`` must go out now instead of at the next interval: something discrete changed (guard,
    job, fan mode, throttling, a drive's health, the device set) or a temperature moved by ``temp_c`` or more."""
    if before is None:
        return True
    if any(_discrete(before, k) != _discrete(after, k) for k in DISCRETE):
        return True
    temps = [("temp_c",)] + [("nvme", d, "temp_c") for d in after["nvme"]]
    for path in temps:
        old, new = _get(before, path), _get(after, path)
        if (old is None) != (new is None) or (old is not None and abs(new - old) >= temp_c):
            return True
    return False


def _discrete(state: Mapping[str, Any], key: str) -> Any:
    if key == "drives":
        return drives(state)
    if key == "nvme_problem":
        return tuple(d["critical_warning"] for d in state["nvme"].values())
    if key == "pcie":
        return has_pcie(state)
    return state.get(key)


def _get(state: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = state
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
