"""The one place a command is signed: piclusterctl's every command and a leader agent's MPI launches come here."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from nodeagent.protocol import envelope
from nodeagent.protocol.envelope import Envelope
from nodeagent.security.keys import SigningKey


def seal(key: SigningKey, topic: str, body: bytes, *, now: float | None = None, nonce: bytes | None = None) -> bytes:
    """``body`` (an encoded command) in an envelope signed by ``key`` for ``topic``, stamped ``now`` (Unix time)
    with a fresh random nonce: the payload to publish on ``topic``."""
    ts_ms = int((time.time() if now is None else now) * 1000)
    env = Envelope(key.public.id, topic, ts_ms, os.urandom(envelope.NONCE_BYTES) if nonce is None else nonce, body)
    return envelope.pack(replace(env, sig=key.sign(env.signed_bytes())))
