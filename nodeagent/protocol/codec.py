"""msgpack framing, sans-I/O. Limits are enforced here so a hostile payload cannot exhaust the agent's memory.

A payload is size-checked, then its shape is checked by ``prescan.scan`` (nesting depth, collection lengths, one
complete document) before msgpack sees it: Debian 12's msgpack leaks memory on malformed input.
"""

from __future__ import annotations

from typing import Any

import msgpack

from nodeagent.errors import ProtocolError
from nodeagent.protocol.prescan import scan

# The largest message any picluster part sends is a few tens of KiB (docs/security.md, "Message sizes"); the
# shipped broker config refuses larger publishes at the same limit.
MAX_PAYLOAD_BYTES = 256 * 1024


def packb(obj: Any) -> bytes:
    """Serialise a wire mapping. Tuples travel as arrays."""
    return msgpack.packb(obj, use_bin_type=True)


def unpackb(payload: bytes) -> Any:
    """Deserialise one msgpack object; anything malformed or oversized becomes a ProtocolError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    scan(payload)
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # msgpack raises a few private types on truncated input
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__})") from None
