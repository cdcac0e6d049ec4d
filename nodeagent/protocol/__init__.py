"""The wire contract between agents, the controller and anything else on the broker. The controller imports it."""

from nodeagent.protocol.messages import (
    TERMINAL_EVENTS,
    ChassisPower,
    Command,
    Event,
    JobSpec,
    NodeFacts,
    NvmeStatus,
    PcieStatus,
    Telemetry,
    decode,
    encode,
    from_wire,
    reply_address,
    to_wire,
)
from nodeagent.protocol.topics import OFFLINE, ONLINE, Topics, check_name
from nodeagent.protocol.version import PROTOCOL_VERSION, TOPIC_ROOT

__all__ = [
    "OFFLINE",
    "ONLINE",
    "PROTOCOL_VERSION",
    "TERMINAL_EVENTS",
    "TOPIC_ROOT",
    "ChassisPower",
    "Command",
    "Event",
    "JobSpec",
    "NodeFacts",
    "NvmeStatus",
    "PcieStatus",
    "Telemetry",
    "Topics",
    "check_name",
    "decode",
    "encode",
    "from_wire",
    "reply_address",
    "to_wire",
]
