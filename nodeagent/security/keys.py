"""Ed25519 keys: the private key file (PEM, PKCS#8, mode 0600), the public key line, signing and verifying.

A public key travels as one line of text, the format of ``/etc/picluster/operators.d/*.pub``::

    picluster-ed25519 <base64 of the 32-byte public key> [comment]

and in messages (facts, a cluster job's ``leader_key``) as the base64 alone. Its id, which a signed envelope
names, is the first 8 bytes of SHA-256 over the 32 bytes, in hex.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.errors import PiclusterError, echo

PREFIX = "picluster-ed25519"
RAW_BYTES = 32
MAX_KEY_FILE = 16 * 1024  # a PEM key is ~120 bytes; refuse to read a device or a huge file by mistake


class KeyFileError(PiclusterError, ValueError):
    """A key file or a key line is unusable; the message names the file and the fix."""


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A public key and the name it goes by in logs (an operator key's file name, a node's name)."""

    raw: bytes
    name: str = ""
    _verifier: list[Any] = field(default_factory=list, compare=False, repr=False)  # the loaded key, made once

    def __post_init__(self) -> None:
        if len(self.raw) != RAW_BYTES:
            raise KeyFileError(f"an Ed25519 public key has {RAW_BYTES} bytes, got {len(self.raw)}")

    @property
    def id(self) -> str:
        return key_id(self.raw)

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode()

    def line(self, comment: str = "") -> str:
        """The ``.pub`` file line."""
        return f"{PREFIX} {self.b64}" + (f" {comment}" if comment else "")

    def verify(self, sig: bytes, data: bytes) -> bool:
        """True when ``sig`` is this key's signature of ``data``."""
        from cryptography.exceptions import InvalidSignature

        if not self._verifier:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            self._verifier.append(Ed25519PublicKey.from_public_bytes(self.raw))
        try:
            self._verifier[0].verify(sig, data)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, text: str, name: str = "") -> PublicKey:
        """A key from a ``.pub`` line (``picluster-ed25519 BASE64 [comment]``) or from the bare base64."""
        words = text.split()
        if len(words) >= 2 and words[0] == PREFIX:
            b64 = words[1]
        elif len(words) == 1 and words[0] != PREFIX:
            b64 = words[0]
        else:
            raise KeyFileError(f"expected '{PREFIX} <base64 of 32 bytes> [comment]', got {echo(text, 80)}")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"the key {echo(b64, 80)} is not base64") from None
        if len(raw) != RAW_BYTES:
            raise KeyFileError(f"the key {echo(b64, 80)} is {len(raw)} bytes long, not {RAW_BYTES}: not an Ed25519 key")
        return cls(raw, name)


class SigningKey:
    """A private Ed25519 key (an operator's, or a node's own for its MPI launches)."""

    def __init__(self, private: Any, name: str = "") -> None:
        self._private = private
        raw = private.public_key().public_bytes(*_raw_format())
        self.public = PublicKey(raw, name)

    @classmethod
    def generate(cls, name: str = "") -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate(), name)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._private.sign(data))

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def save(self, path: Path) -> None:
        """Write the key to a new file, mode 0600; never over an existing file or through a symlink."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.pem())
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: Path, name: str = "", *, private_mode: bool = True) -> SigningKey:
        """The key in ``path``; KeyFileError naming the file and the fix. ``private_mode``: refuse a file others may
        read (as ssh does), since whoever reads it signs as its owner."""

        def others_read(st: os.stat_result) -> str | None:
            if private_mode and st.st_mode & 0o077:
                return f"the key {path} may be read by others (mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}"
            return None

        data = read_key_file(path, MAX_KEY_FILE, others_read)
        return cls(_private_from_pem(data, path), name)


def read_key_file(path: Path, limit: int, unsafe: Callable[[os.stat_result], str | None]) -> bytes:
    """At most ``limit`` + 1 bytes of a key file (more means it is not one): opened without following a link or
    blocking on a FIFO, a regular file, and nothing ``unsafe`` objects to (its words are the KeyFileError's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key {path}: {exc.strerror} (a symlink is not followed)") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"the key {path} is not a regular file")
        if why := unsafe(st):
            raise KeyFileError(why)
        return fh.read(limit + 1)


def _private_from_pem(data: bytes, path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"the key {path} is over {MAX_KEY_FILE} bytes: not a key file")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"the key {path} is not an unencrypted PEM private key ({str(exc)[:120]}); "
            "make one with: piclusterctl keygen"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"the key {path} is not an Ed25519 key; make one with: piclusterctl keygen")
    return private


@functools.cache
def _raw_format() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.Raw, serialization.PublicFormat.Raw


def load_or_create(path: Path, name: str = "") -> tuple[SigningKey, bool]:
    """A node's own key: the one in ``path``, or a new one written there (True) on the first start."""
    if path.exists() or path.is_symlink():
        return SigningKey.load(path, name), False
    key = SigningKey.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    key.save(path)
    return key, True
