"""The operator's signing key on piclusterctl's side: where it is, loading it, and ``piclusterctl keygen``.

The key is ``--key FILE``, else ``PICLUSTER_KEY``, else ``~/.config/picluster/operator.key`` (``$XDG_CONFIG_HOME``)
when that file exists; with none, commands go out unsigned and a node that requires signatures refuses them,
saying how to fix it. ``cryptography`` is loaded only when a command is signed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from controller.args import UsageError
from nodeagent.mqtt.env import ENV_KEY
from nodeagent.security.keys import KeyFileError, SigningKey

OPERATORS_DIR = "/etc/picluster/operators.d"


def default_key_path(env: Mapping[str, str]) -> Path:
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config) / "picluster" / "operator.key"


def key_path(env: Mapping[str, str]) -> Path | None:
    """The key file to sign with: PICLUSTER_KEY (which must exist), else the default one if it exists."""
    if named := env.get(ENV_KEY, ""):
        return Path(named).expanduser()
    default = default_key_path(env)
    return default if default.exists() else None


def operator_key(env: Mapping[str, str]) -> SigningKey | None:
    """The operator's key, or None to send unsigned; UsageError naming the file and the fix when it is unusable."""
    path = key_path(env)
    if path is None:
        return None
    try:
        return SigningKey.load(path, path.stem)
    except KeyFileError as exc:
        raise UsageError(f"{exc} (--key FILE or {ENV_KEY})") from None


def keygen(args: argparse.Namespace) -> int:
    """``piclusterctl keygen [--out FILE]``: a new private key (0600) and its .pub beside it; print how to install
    the public half on the nodes."""
    out = Path(args.out).expanduser() if args.out else default_key_path(os.environ)
    pub = out.with_suffix(".pub")
    for path in (out, pub):
        if path.exists() or path.is_symlink():
            raise UsageError(f"keygen: {path} exists; remove it first or choose another file with --out FILE")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in getpass.getuser()) or "operator"
    key = SigningKey.generate(name)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        key.save(out)
    except OSError as exc:
        raise UsageError(f"keygen: cannot write {out}: {exc.strerror}") from None
    line = key.public.line(f"{name}@{os.uname().nodename}")
    pub.write_text(line + "\n")
    print(line)
    print(f"private key: {out} (mode 0600; whoever reads it can command the fleet)", file=sys.stderr)
    print(f"public key:  {pub} (id {key.public.id})", file=sys.stderr)
    install = f"install -m 0644 {pub.name} {OPERATORS_DIR}/{name}.pub && systemctl reload picluster-agent"
    print(f"install the public key on every node, as root, then reload its agent:\n  {install}", file=sys.stderr)
    if args.out or ENV_KEY in os.environ:
        print(f"and sign with it: piclusterctl --key {out} ... (or {ENV_KEY}={out})", file=sys.stderr)
    return 0
