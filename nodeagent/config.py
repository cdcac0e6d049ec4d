"""Agent configuration: TOML -> frozen dataclasses, strict.

Precedence, highest first: command-line flags, environment (``PICLUSTER_BROKER``, ``PICLUSTER_BACKEND``), the
file (default ``/etc/picluster/agent.toml``), the defaults below. Every error reads
``/etc/picluster/agent.toml: mqtt.keepalive_s: expected a whole number, got '30s'``; unknown keys are errors with
a did-you-mean. docs/configuration.md documents the same keys and defaults (a test compares them).
"""

from __future__ import annotations

import os
import pwd
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from nodeagent.errors import ConfigError
from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.hw.fans.base import FanConfig
from nodeagent.hw.power import Ina2xx
from nodeagent.hw.sim import SimConfig
from nodeagent.hw.slot_lines import SlotPowerConfig
from nodeagent.jobs.template_config import JobTemplate, validate_templates
from nodeagent.metrics.config import PrometheusConfig
from nodeagent.mqtt.settings import Broker, Credentials
from nodeagent.policy.config import PolicyConfig
from nodeagent.protocol.jobs import DEFAULT_MAX_RANKS_PER_CORE
from nodeagent.protocol.topics import NAME_RE
from nodeagent.protocol.typecheck import FieldError, build, check, unknown_key
from nodeagent.security.config import SecurityConfig
from nodeagent.state import state_dir_for

DEFAULT_PATH = Path("/etc/picluster/agent.toml")
# Job kinds built into the agent (nodeagent/jobs/kinds/); a template may not take one of these names.
BUILTIN_KINDS = ("hpl", "stress", "llama-bench", "llama-rpc", "dllama")


def _broker(value: str) -> str | None:
    try:
        Broker.parse(value)
    except ValueError as exc:
        return f"expected a broker URL such as mqtt://broker.local:1883 ({exc})"
    return None


def _above_zero(value: float) -> str | None:
    return None if value > 0 else f"expected a number above 0, got {value!r}"


def _slot(value: int) -> str | None:
    return None if 0 <= value <= 64 else f"expected a slot number from 1 (0: unknown), got {value!r}"


def _name_or_empty(value: str) -> str | None:
    if value == "" or NAME_RE.match(value):
        return None
    return f"expected 1-64 letters, digits, '-' or '_', got {value!r}"


def _unprivileged_user(value: str) -> str | None:
    """jobs.user: never root, by name or by uid/group 0 (a missing user is the runner's to refuse, with the fix)."""
    if not value:
        return "expected the name of an unprivileged user (jobs never run as root), got ''"
    try:
        pw = pwd.getpwnam(value)
    except KeyError:
        return None if value != "root" else "jobs never run as root; set an unprivileged user such as 'picluster'"
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        return (
            f"{value!r} has uid {pw.pw_uid} and group {pw.pw_gid}: jobs never run as root; set an unprivileged "
            "user such as 'picluster' (adduser --system --group picluster)"
        )
    return None


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"expected a TCP port from 1 to 65535, got {value!r}"


@dataclass(frozen=True)
class AgentSection:
    """[agent]: who this node is and how often it ticks."""

    node_id: str = ""  # empty: the host name
    cluster: str = "default"
    tick_s: float = 1.0
    state_dir: str = ""  # empty: $STATE_DIRECTORY or /var/lib/picluster; a simulated node: <that>/sim/<node_id>
    spool_max_events: int = 10000  # unacknowledged events kept on disk; progress is dropped first, results never
    seen_jobs_max: int = 10000  # job ids remembered (on disk) so a redelivered job never runs twice
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class MqttSection:
    """[mqtt]: the broker session."""

    broker: str = "mqtt://localhost:1883"
    username: str = ""
    password: str = ""
    password_file: str = ""  # read at start-up; keeps the secret out of a world-readable config
    client_id: str = ""  # empty: picluster-agent-<node_id>
    keepalive_s: int = 10  # a silent node (cut off, hung) is offline after ~15 s; telemetry keeps it busy anyway
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class InputMonitor:
    """[[hardware.input_monitors]]: an INA219/INA226 measuring a chassis supply on I2C."""

    bus: int
    address: int
    kind: Literal["ina219", "ina226"] = "ina226"
    shunt_ohms: float = 0.01


@dataclass(frozen=True)
class HardwareSection:
    """[hardware]: which backend reads the sensors, where sysfs is, and how often the slow sensors are read."""

    backend: Literal["auto", "real", "sim"] = "auto"
    root: str = "/"  # a recorded tree replays by pointing this at it
    board: str = "auto"  # compute-blade, nanocluster, cm5-io-board, pi5, generic, or auto
    slot: int = 0  # chassis slot (NanoCluster 1-7); 0: unknown
    throttle_path: str = ""  # get_throttled sysfs file; empty: searched under the firmware node
    nvme_smart_interval_s: float = 60.0
    pcie_interval_s: float = 5.0
    power_interval_s: float = 10.0
    vcgencmd: str = "vcgencmd"
    hotplug: bool = True
    input_monitors: tuple[InputMonitor, ...] = ()


@dataclass(frozen=True)
class JobsSection:
    """[jobs]: what may run here, as whom, with which binaries."""

    kinds: tuple[str, ...] = ("hpl",)
    user: str = "picluster"  # jobs run as this user when the agent runs as root; it must exist, and never be root
    work_dir: str = ""  # empty: <state_dir>/jobs
    hpcc: str = "hpcc"
    xhpl: str = ""  # set to an xhpl binary to run plain HPL instead of hpcc
    mpirun: str = "mpirun"
    mpirun_args: tuple[str, ...] = ("--bind-to", "none")
    progress_interval_s: float = 2.0
    max_output_kb: int = 1024
    keep_jobs: int = 20  # finished job directories kept on disk
    governor: str = "performance"  # CPU governor while a job runs, restored afterwards; empty: leave it alone
    fan_boost_pct: float = 60.0  # while a job runs the fan turns at least this fast (the curve may ask for more)
    # More job kinds (nodeagent/jobs/kinds/): their binaries and defaults.
    stress_ng: str = "stress-ng"
    stress_duration_s: int = 60
    stress_workers: int = 0  # 0: one worker per online CPU
    llama_bench: str = "llama-bench"
    rpc_server: str = "rpc-server"
    llama_rpc_bind: str = "0.0.0.0"  # rpc-server has no authentication: keep the cluster network private
    llama_rpc_port: int = 50052
    dllama: str = "dllama"
    dllama_port: int = 9999
    dllama_kv_heads: int = 8  # the model's KV heads when the request does not say (Llama 3.x: 8)
    model_dir: str = ""  # set: model files must lie under this directory
    threads: int = 0  # llama.cpp/dllama threads; 0: the node's cores
    advertise_host: str = ""  # the address workers give their leader; empty: the host name
    distcc: str = "distcc"  # distcc: the client the leader's make runs the compiler through
    distccd: str = "distccd"
    make: str = "make"
    distcc_port: int = 3632  # distccd's port when the request does not say
    build_root: str = ""  # distcc: builds run only in directories under this one; empty: no distcc builds here
    queue_max: int = 4  # heavy jobs waiting for the running one (when the request asks to queue)
    light_max: int = 2  # light jobs running at once (nodeagent/jobs/limits.py)
    max_ranks_per_core: int = DEFAULT_MAX_RANKS_PER_CORE  # MPI ranks per core with oversubscribe=true (else 1)
    log_lines_per_s: int = 10  # job output lines published as log events per second; the rest are counted
    systemd_scope: Literal["auto", "off"] = "auto"  # auto: a transient scope when systemd is PID 1
    scope_properties: tuple[str, ...] = ()  # systemd-run --property values for the scope, e.g. "MemoryMax=90%"
    template: tuple[JobTemplate, ...] = ()  # [[jobs.template]] tables


@dataclass(frozen=True)
class MpiSection:
    """[mpi]: how a cluster-wide job starts Open MPI's daemons on the other nodes (nodeagent/mpi/)."""

    launcher: Literal["agent", "ssh"] = "agent"  # agent: through the agents over MQTT, no SSH keys; ssh: plain ssh
    launch_agent: str = "picluster-mpi-launch"  # mpirun's plm_rsh_agent in "agent" mode
    ssh: str = "ssh"  # mpirun's plm_rsh_agent in "ssh" mode
    if_include: str = ""  # network (CIDR) or interface MPI traffic uses; empty: Open MPI picks
    btl: str = "self,vader,tcp"  # Open MPI transports: vader within a node, tcp between nodes
    launch_timeout_s: float = 300.0  # a member gives up when the leader has not launched its daemon by then


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent configuration. ``source`` names the file it came from (for messages)."""

    agent: AgentSection = field(default_factory=AgentSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    hardware: HardwareSection = field(default_factory=HardwareSection)
    sim: SimConfig = field(default_factory=SimConfig)
    jobs: JobsSection = field(default_factory=JobsSection)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    mpi: MpiSection = field(default_factory=MpiSection)
    fan: tuple[FanConfig, ...] = ()  # [[fan]] tables; empty: the board profile's fan
    slot_power: SlotPowerConfig = field(default_factory=SlotPowerConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    source: str = "(defaults)"

    @property
    def node_id(self) -> str:
        return self.agent.node_id or default_node_id()

    @property
    def broker(self) -> Broker:
        return Broker.parse(self.mqtt.broker)

    @property
    def state_dir(self) -> Path:
        """This node's state directory (nodeagent/state.py): ``agent.state_dir``, else the default, which is
        per node for a simulated one."""
        return state_dir_for(self.agent.state_dir, self.node_id, sim=self.hardware.backend == "sim")

    @property
    def work_dir(self) -> Path:
        return Path(self.jobs.work_dir) if self.jobs.work_dir else self.state_dir / "jobs"

    @property
    def signed_only(self) -> bool:
        """Commands must be signed (``security.require_signed``; unset: true except on a simulated node)."""
        return self.security.signed_only(self.hardware.backend == "sim")

    @property
    def node_key_path(self) -> Path:
        """This node's own signing key (its MPI launches)."""
        return Path(self.security.node_key_file) if self.security.node_key_file else self.state_dir / "node.key"

    @property
    def control_dir(self) -> Path:
        """Files the agent writes for a job to read (a member's launch), where the jobs user cannot write."""
        return self.state_dir / "control"


_VALIDATORS: dict[type, dict[str, Any]] = {
    AgentSection: {
        "tick_s": _above_zero,
        "node_id": _name_or_empty,
        "cluster": _name_or_empty,
        "spool_max_events": _above_zero,
        "seen_jobs_max": _above_zero,
    },
    MqttSection: {"broker": _broker, "keepalive_s": _above_zero, "reconnect_min_s": _above_zero},
    HardwareSection: {
        "nvme_smart_interval_s": _above_zero,
        "pcie_interval_s": _above_zero,
        "power_interval_s": _above_zero,
        "slot": _slot,
    },
    JobsSection: {
        "user": _unprivileged_user,
        "progress_interval_s": _above_zero,
        "max_output_kb": _above_zero,
        "stress_duration_s": _above_zero,
        "llama_rpc_port": _port,
        "dllama_port": _port,
        "dllama_kv_heads": _above_zero,
        "distcc_port": _port,
        "light_max": _above_zero,
        "max_ranks_per_core": _above_zero,
    },
    MpiSection: {"launch_timeout_s": _above_zero},
}


def default_node_id() -> str:
    """The host name, cut at the first dot and made topic-safe."""
    name = socket.gethostname().split(".")[0]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:64]
    return safe or "node"


_SECTIONS: dict[str, type] = {
    "agent": AgentSection,
    "mqtt": MqttSection,
    "hardware": HardwareSection,
    "sim": SimConfig,
    "jobs": JobsSection,
    "policy": PolicyConfig,
    "slot_power": SlotPowerConfig,
    "mpi": MpiSection,
    "homeassistant": HomeAssistantConfig,
    "prometheus": PrometheusConfig,
    "security": SecurityConfig,
}


def from_mapping(data: Mapping[str, Any], source: str = "(defaults)") -> AgentConfig:
    """Build a config from a parsed TOML mapping; raise ConfigError naming ``source``, the key and the fix."""
    try:
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "fan":  # an array of tables: [[fan]]
                kwargs["fan"] = check(value, tuple[FanConfig, ...], "fan")
                continue
            if key not in _SECTIONS:
                raise unknown_key(key, [*_SECTIONS, "fan"])
            if not isinstance(value, Mapping):
                raise FieldError(key, f"expected a table [{key}], got {type(value).__name__}")
            kwargs[key] = build(_SECTIONS[key], value, key, strict=True, validators=_VALIDATORS.get(_SECTIONS[key]))
        cfg = AgentConfig(**kwargs, source=source)
        validate_templates(cfg.jobs.template, reserved=BUILTIN_KINDS)
        if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
            raise FieldError("mqtt.reconnect_max_s", "expected a number at least mqtt.reconnect_min_s")
    except (FieldError, ConfigError) as exc:  # SimConfig checks its own ranges and raises ConfigError
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> AgentConfig:
    """Load the config file (``None``: the default path if it exists, else defaults), then env and overrides.

    ``overrides`` is ``{"section": {"key": value}}`` from command-line flags; they win over everything.
    ``defaults`` (same shape) replace built-in defaults, and the file wins over them (a simulated fleet's own).
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "(defaults)"
    file = Path(path) if path is not None else (DEFAULT_PATH if DEFAULT_PATH.exists() else None)
    if file is not None:
        source = str(file)
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(
                f"{file}: no such file; pass --config PATH or create it (see docs/configuration.md)"
            ) from None
        except PermissionError:
            raise ConfigError(f"{file}: permission denied; the agent's user must be able to read it") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    layered: dict[str, Any] = {k: dict(v) for k, v in (defaults or {}).items()}
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(layered.get(key), Mapping):
            layered[key] = {**layered[key], **value}
        else:
            layered[key] = dict(value) if isinstance(value, Mapping) else value
    if env.get("PICLUSTER_BROKER"):
        layered.setdefault("mqtt", {})["broker"] = env["PICLUSTER_BROKER"]
        source = f"{source} + PICLUSTER_BROKER" if file else "PICLUSTER_BROKER"
    if env.get("PICLUSTER_BACKEND"):
        layered.setdefault("hardware", {})["backend"] = env["PICLUSTER_BACKEND"]
    for section, values in (overrides or {}).items():
        if isinstance(layered.get(section, {}), Mapping):
            layered.setdefault(section, {}).update(values)
    return from_mapping(layered, source)


def real_backend_options(hw: HardwareSection) -> dict[str, Any]:
    """The keyword arguments ``RealBackend`` takes, from ``[hardware]``."""
    return {
        "board": hw.board,
        "throttle_path": hw.throttle_path,
        "nvme_smart_interval_s": hw.nvme_smart_interval_s,
        "pcie_interval_s": hw.pcie_interval_s,
        "power_interval_s": hw.power_interval_s,
        "vcgencmd": hw.vcgencmd,
        "input_monitors": tuple(
            Ina2xx(m.bus, m.address, kind=m.kind, shunt_ohms=m.shunt_ohms) for m in hw.input_monitors
        ),
    }


def read_password(cfg: MqttSection, source: str) -> str:
    """The MQTT password: inline, or the first line of ``password_file``."""
    if not cfg.password_file:
        return cfg.password
    try:
        return Path(cfg.password_file).read_text().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(f"{source}: mqtt.password_file: cannot read {cfg.password_file} ({exc})") from None


def mqtt_login(cfg: AgentConfig) -> Credentials:
    """The agent's own broker login, from [mqtt] (the password read from its file)."""
    m = cfg.mqtt
    return Credentials(m.username, read_password(m, cfg.source), m.ca_file, m.cert_file, m.key_file)


# What a reload (SIGHUP) applies at once; other changes are logged as needing a restart.
LIVE = ("agent", "jobs", "security", "source", "agent.tick_s", "agent.log_level")


def _changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Names of the fields that differ between two config dataclasses (sections, or the keys of one)."""
    return [prefix + f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def reloaded(old: AgentConfig, new: AgentConfig) -> tuple[AgentConfig, list[str]]:
    """The running config with what a reload applies at once (``agent.tick_s``, ``agent.log_level``, [jobs],
    [security]: the operator keys are read again) taken from ``new``, and the keys that changed but need a
    restart."""
    later = [k for k in _changed(old, new) + _changed(old.agent, new.agent, "agent.") if k not in LIVE]
    if new.security.node_key_file != old.security.node_key_file:  # the node's key is loaded once, at start
        later.append("security.node_key_file")
    agent = replace(old.agent, tick_s=new.agent.tick_s, log_level=new.agent.log_level)
    security = replace(new.security, node_key_file=old.security.node_key_file)
    return replace(old, agent=agent, jobs=new.jobs, security=security), later
