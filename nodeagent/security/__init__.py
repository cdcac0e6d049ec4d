"""Signed commands: Ed25519 keys and their files, the one place a command is signed (``seal``), the operator keys a
node trusts (``operators``) and the gate every received command passes (``gate``). docs/security.md explains the
scheme; the envelope's wire format is ``nodeagent/protocol/envelope.py``.

``cryptography`` (Debian's python3-cryptography) is imported only where a key is used, so a piclusterctl command
that signs nothing does not pay for it.
"""
