"""The wire contract between agents, the controller and anything else on the broker. The controller imports it.

The names below load on first use (PEP 562): ``piclusterctl --version`` reads ``protocol/version.py``, which
imports this package, and must not pay for the messages, the codec and msgpack it does not use.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # not typing's: importing typing would cost piclusterctl --version a few milliseconds
if TYPE_CHECKING:
    from typing import Any

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


_WHERE = {
    **dict.fromkeys(
        (
            "TERMINAL_EVENTS",
            "ChassisPower",
            "Command",
            "Event",
            "JobSpec",
            "NodeFacts",
            "NvmeStatus",
            "PcieStatus",
            "Telemetry",
            "decode",
            "encode",
            "from_wire",
            "reply_address",
            "to_wire",
        ),
        "nodeagent.protocol.messages",
    ),
    **dict.fromkeys(("OFFLINE", "ONLINE", "Topics", "check_name"), "nodeagent.protocol.topics"),
    **dict.fromkeys(("PROTOCOL_VERSION", "TOPIC_ROOT"), "nodeagent.protocol.version"),
}

__all__ = [  # every name _WHERE serves (tests/unit/test_protocol.py checks they agree)
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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
