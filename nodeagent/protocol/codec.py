"""msgpack framing, sans-I/O. Limits are enforced here so a hostile payload cannot exhaust the agent's memory."""

from __future__ import annotations

from typing import Any

import msgpack

from nodeagent.errors import ProtocolError

MAX_PAYLOAD_BYTES = 256 * 1024


def packb(obj: Any) -> bytes:
    """Serialise a wire mapping. Tuples travel as arrays."""
    return msgpack.packb(obj, use_bin_type=True)


def unpackb(payload: bytes) -> Any:
    """Deserialise one msgpack object; anything malformed or oversized becomes a ProtocolError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # msgpack raises a few private types on truncated input
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__})") from None
