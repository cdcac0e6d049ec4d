"""What a node shows in Home Assistant: one row per entity (data only; ``discovery`` turns rows into JSON).

Device classes, units and state classes are HA's (developers.home-assistant docs/core/entity/sensor.md): a
temperature in °C, power in W, frequency in MHz, memory as data_size in MiB; counters that only rise are
``total_increasing``; what describes the node's health rather than its work is ``diagnostic``.
"""

from __future__ import annotations

from dataclasses import dataclass

FAN_OPTIONS = ("auto", "30", "50", "75", "100")
GUARD_LEVELS = ("normal", "warm", "hot", "critical")


@dataclass(frozen=True)
class Entity:
    """One HA entity of a node. ``path`` is where its value sits in the state JSON (``nodeagent.ha.state``);
    ``command`` is the HA command (topic leaf) a button or select sends."""

    key: str  # unique within the node: part of unique_id, default_entity_id and the component key
    platform: str  # sensor | binary_sensor | button | select
    name: str  # without the device name: HA puts that in front
    path: tuple[str, ...] = ()
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    diagnostic: bool = False
    config: bool = False  # entity_category config (buttons, the fan select)
    icon: str | None = None
    options: tuple[str, ...] = ()
    precision: int | None = None
    command: str = ""
    enabled: bool = True  # enabled_by_default
    attributes: tuple[str, ...] = ()  # where its attributes (a JSON object) sit in the state JSON


def node_entities(drives: tuple[str, ...], pcie: bool, *, allow_restart: bool, allow_reboot: bool) -> list[Entity]:
    """Every entity of a node with these NVMe drives (and PCIe devices, where ``pcie``)."""
    rows = [
        Entity("soc_temp", "sensor", "SoC temperature", ("temp_c",), "temperature", "°C", "measurement", precision=1),
        Entity("fan_duty", "sensor", "Fan duty", ("fan_duty_pct",), None, "%", "measurement", icon="mdi:fan"),
        Entity("fan_rpm", "sensor", "Fan speed", ("fan_rpm",), None, "rpm", "measurement", icon="mdi:fan"),
        Entity("cpu_freq", "sensor", "CPU frequency", ("freq_mhz",), "frequency", "MHz", "measurement", True),
        Entity("load", "sensor", "Load (1 min)", ("load1",), None, None, "measurement", icon="mdi:gauge"),
        Entity("mem_used", "sensor", "Memory used", ("mem_used_pct",), None, "%", "measurement", icon="mdi:memory"),
        Entity("mem_avail", "sensor", "Memory available", ("mem_avail_mb",), "data_size", "MiB", "measurement", True),
        Entity("power", "sensor", "Power", ("power_w",), "power", "W", "measurement", precision=2),
        Entity("throttled", "binary_sensor", "Throttled", ("throttled",), "problem"),
        Entity("under_voltage", "binary_sensor", "Under-voltage", ("under_voltage",), "problem"),
        Entity(
            "guard", "sensor", "Thermal guard", ("guard",), "enum", options=GUARD_LEVELS, icon="mdi:thermometer-alert"
        ),
        Entity("job", "sensor", "Current job", ("job",), icon="mdi:briefcase-outline"),
        Entity(
            "hpl_gflops",
            "sensor",
            "Last HPL",
            ("last_hpl_gflops",),
            None,
            "Gflops",
            "measurement",
            icon="mdi:speedometer",
        ),
        Entity("identify", "button", "Identify", device_class="identify", config=True, command="identify"),
        Entity(
            "fan_mode",
            "select",
            "Fan mode",
            ("fan_mode",),
            config=True,
            icon="mdi:fan",
            options=FAN_OPTIONS,
            command="fan",
        ),
    ]
    for d in drives:
        rows += [
            Entity(
                f"{d}_temp",
                "sensor",
                f"{d.upper()} temperature",
                ("nvme", d, "temp_c"),
                "temperature",
                "°C",
                "measurement",
                precision=1,
            ),
            Entity(
                f"{d}_used",
                "sensor",
                f"{d.upper()} percentage used",
                ("nvme", d, "percentage_used_pct"),
                None,
                "%",
                "measurement",
                True,
                icon="mdi:harddisk",
            ),
            Entity(
                f"{d}_spare",
                "sensor",
                f"{d.upper()} available spare",
                ("nvme", d, "available_spare_pct"),
                None,
                "%",
                "measurement",
                True,
                icon="mdi:harddisk",
            ),
            Entity(
                f"{d}_media_errors",
                "sensor",
                f"{d.upper()} media errors",
                ("nvme", d, "media_errors"),
                None,
                None,
                "total_increasing",
                True,
                icon="mdi:alert-circle-outline",
            ),
            Entity(
                f"{d}_critical",
                "binary_sensor",
                f"{d.upper()} critical warning",
                ("nvme", d, "critical_warning"),
                "problem",
                diagnostic=True,
            ),
        ]
    if pcie:
        rows += [
            Entity(
                f"aer_{s}",
                "sensor",
                f"PCIe AER {s} errors",
                ("aer", s),
                None,
                None,
                "total_increasing",
                True,
                icon="mdi:expansion-card",
                attributes=("aer_types", s),  # which error types: a flaky link or a failing device
            )
            for s in ("correctable", "nonfatal", "fatal")
        ]
    if allow_restart:
        rows.append(
            Entity("restart_agent", "button", "Restart agent", device_class="restart", config=True, command="restart")
        )
    if allow_reboot:
        rows.append(Entity("reboot", "button", "Reboot", device_class="restart", config=True, command="reboot"))
    return rows


def command_names(*, allow_restart: bool, allow_reboot: bool) -> tuple[str, ...]:
    """The HA commands a node listens to: what its buttons and select send."""
    return ("identify", "fan", *(("restart",) if allow_restart else ()), *(("reboot",) if allow_reboot else ()))
