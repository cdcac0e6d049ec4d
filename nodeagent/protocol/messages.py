"""Message types of the wire contract: frozen dataclasses, encoded as msgpack maps with ``v`` and ``type``.

Decoding validates every field it knows and ignores the ones it does not, so a newer peer can add fields.
A message that fails validation raises ProtocolError naming the field; the agent answers it with a
``rejected`` event where it carries a job id (see ``reply_address``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from nodeagent.errors import ProtocolError, echo
from nodeagent.protocol import codec
from nodeagent.protocol.topics import NAME_RE
from nodeagent.protocol.typecheck import FieldError, build
from nodeagent.protocol.version import PROTOCOL_VERSION

# Job ids become directory names on the node, so no slashes and no leading dot.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")

EventKind = Literal[
    "accepted", "rejected", "queued", "started", "ready", "progress", "log", "finished", "failed", "cancelled", "alert"
]
TERMINAL_EVENTS = frozenset({"rejected", "finished", "failed", "cancelled"})
Scalar = int | float | str | bool
POWER_ACTIONS = ("on", "off", "force-off", "cycle")
MAX_SLOT = 7  # a NanoCluster's slots; slot 1 switches the others
MAX_ADDRESSES = 16


def _job_id(value: str) -> str | None:
    return None if JOB_ID_RE.match(value) else f"expected 1-80 letters, digits, '.', '-' or '_', got {echo(value)}"


def _job_id_or_empty(value: str) -> str | None:
    return None if value == "" else _job_id(value)


def _node_name(value: str) -> str | None:
    return None if NAME_RE.match(value) else f"expected a node name (letters, digits, '-', '_'), got {echo(value)}"


def _node_names(values: tuple[str, ...]) -> str | None:
    bad = [v for v in values if not NAME_RE.match(v)]
    return f"invalid node names {echo(bad)}" if bad else None


def _addresses(values: tuple[str, ...]) -> str | None:
    if len(values) > MAX_ADDRESSES:
        return f"expected at most {MAX_ADDRESSES} addresses, got {len(values)}"
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"expected IP addresses, got {echo(value)}"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else f"expected a number above 0, got {echo(value)}"


def _pcie_devices(devices: tuple[PcieStatus, ...]) -> str | None:
    """Every device's ``aer_types`` within bounds: known severities, a bounded number of short names, counts that
    fit a u64 (what the kernel prints)."""
    for i, dev in enumerate(devices):
        for severity, types in dev.aer_types.items():
            where = f"device {i} ({dev.device[:40]!r}) aer_types.{severity}"
            if severity not in AER_SEVERITIES:
                return f"{where}: expected one of {', '.join(AER_SEVERITIES)}"
            if len(types) > MAX_AER_TYPES:
                return f"{where}: expected at most {MAX_AER_TYPES} error types, got {len(types)}"
            for name, count in types.items():
                if not 0 < len(name) <= MAX_AER_TYPE_NAME or not name.isprintable():
                    return f"{where}: expected a name of 1-{MAX_AER_TYPE_NAME} printable characters, got {name[:80]!r}"
                if not 0 <= count < 2**64:
                    return f"{where}.{name}: expected a count from 0 to 2^64-1, got {count}"
    return None


@dataclass(frozen=True)
class NodeFacts:
    """What a node is (retained on ``facts``): the controller plans jobs from it."""

    TYPE: ClassVar[str] = "facts"
    node: str
    agent_version: str
    board: str
    model: str
    serial: str
    cores: int
    memory_mb: int
    cpu: str = ""
    hostname: str = ""
    addresses: tuple[str, ...] = ()  # the node's IP addresses (IPv4 first): how peers reach it
    slot: int | None = None
    sim: bool = False
    capabilities: tuple[str, ...] = ()  # job kinds this node will run
    roles: tuple[str, ...] = ()  # chassis duties: "chassis" (fan and power budget), "slot-power"
    policy: dict[str, Any] = field(default_factory=dict)  # the effective [policy] settings
    key: str = ""  # the node's own Ed25519 public key (base64): it signs the node's MPI launches as a job's leader
    t: float = 0.0


@dataclass(frozen=True)
class NvmeStatus:
    """One NVMe drive in telemetry: the hwmon temperature every tick, SMART fields from the last log read."""

    device: str  # nvme0
    present: bool = True
    temp_c: float | None = None
    critical_warning: int = 0  # raw SMART bits; ``warnings`` names them
    warnings: tuple[str, ...] = ()
    available_spare_pct: int | None = None
    percentage_used_pct: int | None = None
    media_errors: int | None = None
    unsafe_shutdowns: int | None = None
    power_on_hours: int | None = None
    data_read_bytes: int | None = None
    data_written_bytes: int | None = None
    error_log_entries: int | None = None
    smart_t: float | None = None  # when the SMART page was read


AER_SEVERITIES = ("correctable", "nonfatal", "fatal")
MAX_AER_TYPES = 64  # error types per severity a PcieStatus may carry (kernels name at most 23)
MAX_AER_TYPE_NAME = 64


@dataclass(frozen=True)
class PcieStatus:
    """One PCI device: how its link trained, and its AER error totals with what rose since the last reading.

    ``aer_types`` is the device's own per-type counts (``aer_dev_*``) above zero, by severity and the kernel's
    name: ``{"correctable": {"BadTLP": 41, "Timeout": 26}, "nonfatal": {"CmpltTO": 3}}``. A severity with no
    error is left out, so a healthy device sends an empty map."""

    device: str  # bus/device/function, e.g. 0001:01:00.0
    speed_gts: float | None = None
    max_speed_gts: float | None = None
    width: int | None = None
    max_width: int | None = None
    degraded: bool = False  # trained below what both ends allow
    aer_correctable: int | None = None
    aer_nonfatal: int | None = None
    aer_fatal: int | None = None
    aer_rising: tuple[str, ...] = ()  # severities whose counters grew since the previous reading
    aer_types: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Telemetry:
    """One tick of fast sensors (retained on ``telemetry``, so a new viewer sees the latest at once)."""

    TYPE: ClassVar[str] = "telemetry"
    node: str
    seq: int
    t: float
    temp_c: float | None = None
    freq_mhz: float | None = None
    governor: str | None = None
    throttled: int | None = None
    throttle: tuple[str, ...] = ()
    load1: float | None = None
    mem_total_mb: int | None = None
    mem_avail_mb: int | None = None
    fan_duty_pct: float | None = None
    fan_rpm: int | None = None
    power_w: float | None = None  # PMIC rail power
    ext5v_v: float | None = None
    input_power_w: float | None = None  # chassis input, where INA monitors are configured
    freq_cap_mhz: float | None = None  # the power budget's CPU frequency cap; None: not capped
    nvme: tuple[NvmeStatus, ...] = ()
    pcie: tuple[PcieStatus, ...] = ()
    guard: str = "normal"  # thermal guard level: normal | warm | hot | critical
    fan_mode: str = "auto"  # "auto" (the curve) or the operator's fixed percent
    job: str | None = None
    job_progress: float | None = None  # the running job's last progress (0..1), retained for late viewers
    job_phase: str = ""
    job_frozen: bool = False  # the guard froze the running job (too hot)
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """A job as submitted: ``params`` apply to every node, ``node_params[node]`` override them per node."""

    id: str
    kind: str
    params: dict[str, Scalar] = field(default_factory=dict)
    node_params: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    timeout_s: float = 3600.0
    force: bool = False
    queue: bool = False  # the node is busy with a heavy job: wait in its queue instead of being refused

    def params_for(self, node: str) -> dict[str, Scalar]:
        return {**self.params, **self.node_params.get(node, {})}


@dataclass(frozen=True)
class Command:
    """An instruction to one node (node ``cmd`` topic) or to the nodes listed in ``nodes`` (cluster ``cmd``)."""

    TYPE: ClassVar[str] = "command"
    id: str
    cmd: Literal["run", "cancel", "fan", "identify", "power", "launch", "resend"]
    nodes: tuple[str, ...] = ()
    job: JobSpec | None = None  # for run
    job_id: str = ""  # for cancel and resend, and launch (the cluster job the MPI daemon belongs to)
    value: str = ""  # for fan: "auto" or a percent 0-100; for power: "on", "off", "force-off" or "cycle"
    slot: int = 0  # for power: the chassis slot (1-7) to switch
    sender: str = ""
    t: float = 0.0
    argv: tuple[str, ...] = ()  # for launch: the words mpirun gave its remote launcher (nodeagent/mpi/orted.py)


@dataclass(frozen=True)
class Event:
    """Something that happened on a node, in order (``seq``), QoS 1 on ``events``.

    Job lifecycle: accepted | rejected -> started -> progress* -> finished | failed | cancelled.
    """

    TYPE: ClassVar[str] = "event"
    node: str
    seq: int
    t: float
    kind: EventKind
    job: str = ""
    reason: str = ""  # rejected, failed: why, in words for the operator
    field: str = ""  # rejected: which field of the request was at fault
    progress: float | None = None  # 0..1
    phase: str = ""
    message: str = ""
    result: dict[str, Any] | None = None  # finished: the kind's result
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_EVENTS


@dataclass(frozen=True)
class ChassisPower:
    """The chassis power budget as its driver sees it (retained on the driver's ``power``): every node of the
    chassis applies ``cap_khz``, and controllers admit heavy jobs against ``budget_w``."""

    TYPE: ClassVar[str] = "power"
    node: str  # the driver
    t: float
    budget_w: float
    measured_w: float | None  # chassis input power, None when unknown
    source: str  # "input" (the driver's input monitor), "nodes" (sum of node readings and estimates), "none"
    estimated_w: float  # the chassis load by the configured per-node estimates
    cap_khz: int = 0  # CPU frequency cap for every node; 0: not capped
    busy: tuple[str, ...] = ()  # nodes running a job
    nodes: tuple[str, ...] = ()  # nodes counted (the driver included)
    node_idle_w: float = 0.0  # the estimates controllers admit with
    node_heavy_w: float = 0.0
    base_w: float = 0.0


Message = NodeFacts | Telemetry | Command | Event | ChassisPower
M = TypeVar("M", NodeFacts, Telemetry, Command, Event, ChassisPower)

_VALIDATORS: dict[type, dict[str, Any]] = {
    NodeFacts: {"node": _node_name, "addresses": _addresses},
    Telemetry: {"node": _node_name, "pcie": _pcie_devices},
    Command: {"id": _job_id, "nodes": _node_names, "job_id": _job_id_or_empty},
    Event: {"node": _node_name, "job": _job_id_or_empty},
    ChassisPower: {"node": _node_name, "busy": _node_names, "nodes": _node_names},
}


def to_wire(msg: Message) -> dict[str, Any]:
    """The mapping that goes on the wire: the fields plus ``v`` and ``type``."""
    body = dataclasses.asdict(msg)
    return {"v": PROTOCOL_VERSION, "type": msg.TYPE, **body}


def encode(msg: Message) -> bytes:
    return codec.packb(to_wire(msg))


def decode(payload: bytes, cls: type[M]) -> M:
    """Decode and validate one message of type ``cls``; raise ProtocolError(reason, field) if it is not one."""
    data = codec.unpackb(payload)
    return from_wire(data, cls)


def from_wire(data: Any, cls: type[M]) -> M:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"expected a map, got {type(data).__name__}")
    version = data.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {echo(version)} is not {PROTOCOL_VERSION}; upgrade the older side", "v")
    if data.get("type") != cls.TYPE:
        raise ProtocolError(f"expected a message of type {cls.TYPE!r}, got {echo(data.get('type'))}", "type")
    body = {k: v for k, v in data.items() if k not in ("v", "type")}
    try:
        msg = build(cls, body, strict=False, validators=_VALIDATORS.get(cls))
        if isinstance(msg, Command):
            _check_command(msg)
        return msg
    except FieldError as exc:
        raise ProtocolError(exc.message, exc.path) from None


def _check_command(cmd: Command) -> None:
    if cmd.cmd == "run":
        if cmd.job is None:
            raise FieldError("job", "missing; a run command needs a job")
        problem = _job_id(cmd.job.id) or None
        if problem:
            raise FieldError("job.id", problem)
        if cmd.job.id != cmd.id:
            raise FieldError("job.id", f"must equal the command id {echo(cmd.id)}")
        if _positive(cmd.job.timeout_s):
            raise FieldError("job.timeout_s", _positive(cmd.job.timeout_s) or "")
    elif cmd.cmd in ("cancel", "launch", "resend") and not cmd.job_id:
        raise FieldError("job_id", f"missing; a {cmd.cmd} command needs the job id")
    elif cmd.cmd == "launch" and not cmd.argv:
        raise FieldError("argv", "missing; a launch command needs the daemon's command line")
    elif cmd.cmd == "fan" and fan_mode(cmd.value) is None:
        raise FieldError("value", f'expected "auto" or a percent from 0 to 100, got {echo(cmd.value)}')
    elif cmd.cmd == "power":
        if cmd.value not in POWER_ACTIONS:
            raise FieldError("value", f"expected one of {', '.join(POWER_ACTIONS)}, got {echo(cmd.value)}")
        if not 1 <= cmd.slot <= MAX_SLOT:
            raise FieldError("slot", f"expected a chassis slot from 1 to {MAX_SLOT}, got {echo(cmd.slot)}")


def fan_mode(value: str) -> str | float | None:
    """A fan command's value: ``"auto"``, a percent 0-100, or None when it is neither."""
    if value == "auto":
        return value
    try:
        pct = float(value)
    except ValueError:
        return None
    return pct if 0.0 <= pct <= 100.0 else None


def reply_address(payload: bytes) -> str:
    """Best effort: the job id a malformed command was about, so its rejection can reach the sender."""
    try:
        data = codec.unpackb(payload)
    except ProtocolError:
        return ""
    return peek(data)[0]


def peek(data: Any) -> tuple[str, tuple[str, ...]]:
    """Best effort, from a decoded command that may be invalid or unverified: the id to answer (``id``,
    ``job.id`` or ``job_id``, whichever is a valid job id first) and the nodes a cluster command names."""
    if not isinstance(data, Mapping):
        return "", ()
    reply = ""
    for candidate in (
        data.get("id"),
        (data.get("job") or {}).get("id") if isinstance(data.get("job"), Mapping) else None,
        data.get("job_id"),
    ):
        if isinstance(candidate, str) and JOB_ID_RE.match(candidate):
            reply = candidate
            break
    nodes = data.get("nodes")
    named = tuple(n for n in nodes if isinstance(n, str)) if isinstance(nodes, (list, tuple)) else ()
    return reply, named
