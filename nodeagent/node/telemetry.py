"""Turn a hardware ``Sample`` into the wire's ``Telemetry``, the hardware's ``Facts`` into its ``NodeFacts``, and
hardware events into ``alert`` fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodeagent.hw.base import Facts, Sample
from nodeagent.hw.events import HwEvent
from nodeagent.hw.nvme import NvmeSample
from nodeagent.hw.pcie import PcieSample, aer_types
from nodeagent.protocol import NodeFacts, NvmeStatus, PcieStatus, Telemetry
from nodeagent.protocol.version import __version__

U64_MAX = 2**64 - 1  # msgpack's largest integer; SMART counters are 128-bit


def _u64(value: int) -> int:
    return min(value, U64_MAX)


def nvme_status(drive: NvmeSample) -> NvmeStatus:
    smart = drive.smart
    if not drive.present:
        return NvmeStatus(device=drive.name, present=False)
    if smart is None:
        return NvmeStatus(device=drive.name, temp_c=drive.temp_c)
    return NvmeStatus(
        device=drive.name,
        temp_c=drive.temp_c,
        critical_warning=smart.critical_warning,
        warnings=smart.critical_warning_names,
        available_spare_pct=smart.available_spare_pct,
        percentage_used_pct=smart.percentage_used_pct,
        media_errors=_u64(smart.media_errors),
        unsafe_shutdowns=_u64(smart.unsafe_shutdowns),
        power_on_hours=_u64(smart.power_on_hours),
        data_read_bytes=_u64(smart.data_read_bytes),
        data_written_bytes=_u64(smart.data_written_bytes),
        error_log_entries=_u64(smart.error_log_entries),
        smart_t=drive.smart_t,
    )


def pcie_status(dev: PcieSample) -> PcieStatus:
    link = dev.link
    # A root port's own counters stay at zero; the errors it saw from below are its rootport totals.
    aer = dev.rootport if dev.rootport is not None else dev.aer
    return PcieStatus(
        device=dev.bdf,
        speed_gts=link.speed_gts if link else None,
        max_speed_gts=link.max_speed_gts if link else None,
        width=link.width if link else None,
        max_width=link.max_width if link else None,
        degraded=link.degraded if link else False,
        aer_correctable=aer.correctable,
        aer_nonfatal=aer.nonfatal,
        aer_fatal=aer.fatal,
        aer_rising=dev.rising,
        aer_types={s: types for s, counts in dev.counters.items() if (types := aer_types(counts))},
    )


@dataclass(frozen=True)
class NodeState:
    """What the node decided this tick, published beside what it measured."""

    duty_pct: float | None = None  # what the agent told its fans; None: the fan duty the sample read
    guard: str = "normal"
    fan_mode: str = "auto"
    job_frozen: bool = False
    freq_cap_mhz: float | None = None
    errors: tuple[str, ...] = ()  # the fans' errors, after the sample's own
    job_progress: float | None = None  # the running job's last progress event
    job_phase: str = ""


def telemetry_from(node: str, seq: int, sample: Sample, job: str | None, state: NodeState = NodeState()) -> Telemetry:
    """The telemetry message of one tick."""
    return Telemetry(
        node=node,
        seq=seq,
        t=sample.t,
        temp_c=sample.temp_c,
        freq_mhz=sample.freq_mhz,
        governor=sample.governor,
        throttled=sample.throttled,
        throttle=sample.throttle_names,
        load1=sample.load1,
        mem_total_mb=sample.mem_total_mb,
        mem_avail_mb=sample.mem_avail_mb,
        fan_duty_pct=sample.fan_duty_pct if state.duty_pct is None else state.duty_pct,
        fan_rpm=sample.fan_rpm,
        power_w=sample.power_w,
        ext5v_v=sample.ext5v_v,
        input_power_w=sample.input_power_w,
        freq_cap_mhz=state.freq_cap_mhz,
        nvme=tuple(nvme_status(d) for d in sample.nvme),
        pcie=tuple(pcie_status(d) for d in sample.pcie),
        guard=state.guard,
        fan_mode=state.fan_mode,
        job=job,
        job_progress=state.job_progress if job else None,
        job_phase=state.job_phase if job else "",
        job_frozen=state.job_frozen,
        errors=(*sample.errors, *state.errors),
    )


def alert_fields(event: HwEvent) -> dict[str, Any]:
    """The fields of the ``alert`` event that reports a hardware event (a drive lost, a device plugged)."""
    return {"message": event.message, "data": {"hw_event": event.kind, "device": event.device}}


def pcie_alerts(
    devices: tuple[PcieSample, ...], degraded_before: frozenset[str]
) -> tuple[list[HwEvent], frozenset[str]]:
    """Hardware events for PCIe trouble: a link newly trained below its maximum, AER counters that rose.

    Returns the events and the set of degraded links to pass in next time, so a degraded link is reported when it
    degrades (and when it recovers), not on every tick.
    """
    events = []
    degraded = frozenset(d.bdf for d in devices if d.link is not None and d.link.degraded)
    for dev in devices:
        if dev.bdf in degraded - degraded_before:
            events.append(HwEvent("pcie.degraded", dev.bdf, f"PCIe {dev.bdf} ({dev.pci_id}) trained at {dev.link}"))
        if dev.rising:
            grew = ", ".join(f"+{_grown(dev, s)} {s}{_by_type(dev.types_increase.get(s, {}))}" for s in dev.rising)
            events.append(HwEvent("pcie.aer_rising", dev.bdf, f"PCIe {dev.bdf} AER errors rising: {grew}"))
    events += [
        HwEvent("pcie.recovered", bdf, f"PCIe {bdf} trained at its maximum again")
        for bdf in sorted(degraded_before - degraded)
    ]
    return events, degraded


def _grown(dev: PcieSample, severity: str) -> int:
    below = (dev.rootport_increase.get(severity) or 0) if dev.rootport_increase else 0
    return (dev.increase.get(severity) or 0) + below


def _by_type(grown: dict[str, int]) -> str:
    """`` (BadTLP +3, Timeout +1)``: which error types rose, most first; what tells a flaky link from a failing
    device (docs/hardware.md)."""
    ranked = sorted(grown.items(), key=lambda kv: (-kv[1], kv[0]))
    return f" ({', '.join(f'{name} +{n}' for name, n in ranked)})" if ranked else ""


def facts_from(
    node: str,
    f: Facts,
    slot: int,
    sim: bool,
    capabilities: tuple[str, ...],
    roles: tuple[str, ...],
    policy: dict[str, Any],
    t: float,
    addresses: tuple[str, ...] = (),
) -> NodeFacts:
    """What this node is, as the ``facts`` message says it (also HA's device and Prometheus's node_info).
    ``slot``: the configured one, else the board's."""
    return NodeFacts(
        node=node,
        agent_version=__version__,
        board=f.board,
        model=f.model,
        serial=f.serial,
        cores=f.cores,
        memory_mb=f.memory_mb,
        cpu=f.cpu,
        hostname=f.hostname,
        addresses=addresses,
        slot=slot or f.slot,
        sim=sim,
        capabilities=capabilities,
        roles=roles,
        policy=policy,
        t=t,
    )
