"""The health gate: may this node start a job now? Every reason against is given, in words for the operator.

A node is refused when it is under-volted, frequency-capped, throttled or at the soft temperature limit *now*
(get_throttled bits 0–3), when its NVMe drive reports any critical-warning bit, when PCIe AER errors are rising
(any new fatal or non-fatal error, or correctable errors faster than ``aer_correctable_per_min``), when it is
hotter than ``start_max_c`` or its temperature cannot be read, and — for heavy jobs only — when the thermal
guard refuses heavy jobs. ``force=True`` admits anyway and keeps the reasons, so the job's record shows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from nodeagent.policy.config import GateConfig
from nodeagent.policy.fan import readable
from nodeagent.protocol.throttle import FREQ_CAPPED, SOFT_TEMP_LIMIT, THROTTLED, UNDER_VOLTAGE

# Why each get_throttled "now" bit (nodeagent/protocol/throttle.py) refuses a job.
THROTTLE_REASONS: dict[int, str] = {
    UNDER_VOLTAGE: "under-voltage now (get_throttled bit 0): check the power supply and its cable",
    FREQ_CAPPED: "ARM frequency capped now (get_throttled bit 1)",
    THROTTLED: "throttled now (get_throttled bit 2)",
    SOFT_TEMP_LIMIT: "soft temperature limit active now (get_throttled bit 3)",
}

# NVMe SMART log byte 0 (critical_warning), NVME_SMART_CRIT_* in the kernel's include/linux/nvme.h.
NVME_CRITICAL_WARNINGS: dict[int, str] = {
    0: "spare capacity below its threshold",
    1: "temperature outside its thresholds",
    2: "reliability degraded by media or internal errors",
    3: "media placed in read-only mode",
    4: "volatile-memory backup device failed",
}


@dataclass(frozen=True)
class AerIncrease:
    """How much one PCIe device's AER counters rose since the previous sample, ``interval_s`` earlier.

    A negative increase (counters reset by a reboot or a driver reload) counts as none.
    """

    device: str  # PCI address, e.g. "0001:01:00.0"
    correctable: int = 0
    nonfatal: int = 0
    fatal: int = 0
    interval_s: float = 60.0


@dataclass(frozen=True)
class HealthInput:
    """The node's health as the gate sees it. ``None`` means not available (no NVMe, no get_throttled file)."""

    temp_c: float | None
    throttled: int | None = None  # raw get_throttled word
    nvme_critical_warning: int | None = None  # SMART log byte 0
    aer: tuple[AerIncrease, ...] = ()
    guard_refuses_heavy: bool = False  # GuardDecision.refuse_heavy


@dataclass(frozen=True)
class Admission:
    """The answer to "may this job start?". ``forced`` is true when ``force`` overrode at least one reason."""

    admitted: bool
    reasons: tuple[str, ...] = ()
    forced: bool = False


def _throttle_reasons(throttled: int | None) -> Iterator[str]:
    for bit, words in THROTTLE_REASONS.items():
        if throttled is not None and throttled >> bit & 1:
            yield words


def _nvme_reasons(warning: int | None) -> Iterator[str]:
    for bit in range(8):
        if warning is not None and warning >> bit & 1:
            what = NVME_CRITICAL_WARNINGS.get(bit, f"critical-warning bit {bit}")
            yield f"NVMe critical warning: {what} (SMART critical_warning bit {bit})"


def _aer_reasons(increases: tuple[AerIncrease, ...], cfg: GateConfig) -> Iterator[str]:
    for inc in increases:
        for count, kind in ((inc.fatal, "fatal"), (inc.nonfatal, "non-fatal")):
            if count > 0:
                yield f"PCIe {inc.device}: {count} new {kind} AER error(s) in the last {inc.interval_s:g} s"
        if inc.correctable > 0:
            per_min = inc.correctable * 60.0 / inc.interval_s if inc.interval_s > 0 else float("inf")
            if per_min > cfg.aer_correctable_per_min:
                yield (
                    f"PCIe {inc.device}: correctable AER errors rising at {per_min:.1f}/min "
                    f"({inc.correctable} in {inc.interval_s:g} s; limit policy.gate.aer_correctable_per_min = "
                    f"{cfg.aer_correctable_per_min:g})"
                )


def _temperature_reasons(h: HealthInput, cfg: GateConfig, heavy: bool) -> Iterator[str]:
    if not readable(h.temp_c):
        yield "the SoC temperature cannot be read"
    elif h.temp_c > cfg.start_max_c:
        yield f"SoC at {h.temp_c:.1f} °C, above the {cfg.start_max_c:g} °C start limit (policy.gate.start_max_c)"
    if heavy and h.guard_refuses_heavy:
        yield (
            "the thermal guard refuses heavy jobs (hot, sensor lost, or a critical temperature not yet cleared "
            "by an operator or by cooling down)"
        )


def refusal_reasons(h: HealthInput, cfg: GateConfig, *, heavy: bool) -> tuple[str, ...]:
    """Every reason the node should not start a job now (empty: it may)."""
    return (
        *_throttle_reasons(h.throttled),
        *_nvme_reasons(h.nvme_critical_warning),
        *_aer_reasons(h.aer, cfg),
        *_temperature_reasons(h, cfg, heavy),
    )


def admit_job(h: HealthInput, cfg: GateConfig, *, heavy: bool, force: bool) -> Admission:
    """Admit or refuse a job on this node. ``heavy``: a job that loads every core (HPL, inference).
    ``force``: the operator's override; the job is admitted and the reasons are kept with ``forced=True``."""
    reasons = refusal_reasons(h, cfg, heavy=heavy)
    if not reasons:
        return Admission(admitted=True)
    return Admission(admitted=force, reasons=reasons, forced=force)
