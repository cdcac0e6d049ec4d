"""The signed envelope: a command's exact encoded bytes, with the key that signed it, the topic it was signed for,
when, and a nonce. Pure wire format; the signatures themselves are ``nodeagent/security``'s.

On the wire it is one msgpack map (decoded through ``codec.unpackb``, so through the pre-scan, like any message):

```
v      1                 the protocol version
type   "signed"
alg    "ed25519"
key    16 hex digits     the signing key's id: the first 8 bytes of SHA-256 over its 32-byte public key
topic  string            the topic it was signed for (a receiver compares it with the topic it came on)
ts     int               when it was signed, milliseconds since the Unix epoch
nonce  16 bytes          random; a receiver keeps the nonces it has seen for as long as ``ts`` is fresh
body   bytes             the command, exactly as ``encode(Command)`` made it (decoded again, pre-scan and all)
sig    64 bytes          Ed25519 over ``signed_bytes()``
```

Canonicalisation is trivial because nothing is re-encoded: the signature covers fixed-width fields and the
body's own bytes, laid end to end: the domain string, the key id (8 bytes), ``ts`` (u64, big-endian), the nonce,
the topic's length (u16, big-endian) and its UTF-8 bytes, then the body.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.errors import ProtocolError, echo
from nodeagent.protocol import codec
from nodeagent.protocol.version import PROTOCOL_VERSION

TYPE = "signed"
ALG = "ed25519"
DOMAIN = b"picluster/v1 signed command\0"  # the signature of anything else never verifies as a command's
NONCE_BYTES = 16
SIG_BYTES = 64
MAX_TOPIC = 512  # bytes; picluster's longest topic is about 150
MAX_TS_MS = 2**63 - 1
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
FIELDS = ("alg", "key", "topic", "ts", "nonce", "body", "sig")


@dataclass(frozen=True)
class Envelope:
    """One signed command. ``sig`` is empty until ``nodeagent.security.seal`` signs ``signed_bytes()``."""

    key: str  # the signing key's id, 16 hex digits
    topic: str
    ts_ms: int
    nonce: bytes
    body: bytes
    sig: bytes = b""

    @property
    def ts(self) -> float:
        return self.ts_ms / 1000.0

    def signed_bytes(self) -> bytes:
        """What the signature covers (see the module docstring)."""
        topic = self.topic.encode()
        return b"".join(
            (
                DOMAIN,
                bytes.fromhex(self.key),
                self.ts_ms.to_bytes(8, "big"),
                self.nonce,
                len(topic).to_bytes(2, "big"),
                topic,
                self.body,
            )
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "type": TYPE,
            "alg": ALG,
            "key": self.key,
            "topic": self.topic,
            "ts": self.ts_ms,
            "nonce": self.nonce,
            "body": self.body,
            "sig": self.sig,
        }


def pack(env: Envelope) -> bytes:
    """The wire bytes of a signed envelope; ValueError when it breaks a bound (a bug of the sender's)."""
    problem = _problem(env)
    if problem:
        raise ValueError(f"not a valid envelope: {problem[0]}: {problem[1]}")
    return codec.packb(env.to_wire())


def is_envelope(data: Any) -> bool:
    """True when a decoded message says it is a signed envelope (it may still be a malformed one)."""
    return isinstance(data, Mapping) and data.get("type") == TYPE


def from_wire(data: Mapping[str, Any]) -> Envelope:
    """The envelope in a decoded map; ProtocolError naming the field when it is not a valid one. Fields a newer
    sender adds are ignored: they are not signed, so they cannot mean anything."""
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {echo(data.get('v'))} is not {PROTOCOL_VERSION}", "v")
    if data.get("alg") != ALG:
        raise ProtocolError(f"expected alg {ALG!r}, got {echo(data.get('alg'))}", "alg")
    types = {"key": str, "topic": str, "ts": int, "nonce": bytes, "body": bytes, "sig": bytes}
    for name, kind in types.items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"expected {kind.__name__}, got {echo(value)}", name)
    env = Envelope(data["key"], data["topic"], data["ts"], data["nonce"], data["body"], data["sig"])
    problem = _problem(env)
    if problem:
        raise ProtocolError(problem[1], problem[0])
    return env


def unpack(payload: bytes) -> Envelope:
    """Decode and check one envelope (ProtocolError when it is anything else)."""
    data = codec.unpackb(payload)
    if not is_envelope(data):
        raise ProtocolError("not a signed envelope", "type")
    return from_wire(data)


def _problem(env: Envelope) -> tuple[str, str] | None:
    """(field, reason) of the first bound ``env`` breaks, None when it is valid."""
    if not KEY_ID_RE.match(env.key):
        return "key", f"expected a key id of 16 lowercase hex digits, got {echo(env.key)}"
    if not env.topic or len(env.topic.encode()) > MAX_TOPIC:
        return "topic", f"expected a topic of 1 to {MAX_TOPIC} bytes, got {echo(env.topic)}"
    if not 0 <= env.ts_ms <= MAX_TS_MS:
        return "ts", f"expected milliseconds since 1970 from 0 to 2^63-1, got {echo(env.ts_ms)}"
    if len(env.nonce) != NONCE_BYTES:
        return "nonce", f"expected {NONCE_BYTES} bytes, got {len(env.nonce)}"
    if not env.body:
        return "body", "expected the signed command's bytes, got none"
    if len(env.sig) != SIG_BYTES:
        return "sig", f"expected {SIG_BYTES} bytes, got {len(env.sig)}"
    return None


def payload_digest(topic: str, payload: bytes) -> str:
    """What a refusal quotes of the command it refuses: its sender recognises its own (the topic and the exact
    payload it published) and no one else's, so a forged copy's refusal cannot end the sender's job."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:16]
