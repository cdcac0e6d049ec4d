"""The operator keys a node trusts: ``security.operator_keys_dir`` (``/etc/picluster/operators.d``), one key per
``NAME.pub`` file, whose NAME is the key's name in logs and events.

A file holds one key line (``picluster-ed25519 <base64> [comment]``); blank lines and lines starting with ``#``
are ignored. Whoever can write the directory or a file in it can make the node obey any key, so a file (or the
directory) that someone other than its owner may write, or whose owner is neither root nor the agent's user, is
skipped with a problem naming it and the fix; so is a file that is not a regular one (a symlink included).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nodeagent.errors import echo
from nodeagent.security.keys import KeyFileError, PublicKey, read_key_file

SUFFIX = ".pub"
MAX_FILES = 256
MAX_FILE_BYTES = 4096


@dataclass(frozen=True)
class OperatorKeys:
    """Keys by id, and what could not be read (each problem names a file and the fix)."""

    directory: str
    keys: dict[str, PublicKey]
    problems: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return sorted(k.name for k in self.keys.values())


def _unsafe(st: os.stat_result, what: str) -> str:
    """Why a file or directory with this status cannot be trusted to hold keys ("" when it can)."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} is owned by uid {st.st_uid}, not root: chown root:root {what}"
    if mode & 0o022:
        return f"{what} may be written by others (mode {mode:04o}): chmod go-w {what}"
    return ""


def read_operator_keys(directory: str | Path) -> OperatorKeys:
    """Every usable ``*.pub`` in ``directory`` (a missing directory: no keys, and a problem saying so)."""
    where = Path(directory)
    try:
        dir_stat = os.stat(where)
    except FileNotFoundError:
        return OperatorKeys(str(where), {}, (f"{where} does not exist: no operator key is trusted",))
    except OSError as exc:
        return OperatorKeys(str(where), {}, (f"{where}: {exc.strerror}",))
    if not stat.S_ISDIR(dir_stat.st_mode):
        return OperatorKeys(str(where), {}, (f"{where} is not a directory",))
    if why := _unsafe(dir_stat, str(where)):
        return OperatorKeys(str(where), {}, (why,))
    keys: dict[str, PublicKey] = {}
    problems: list[str] = []
    names = sorted(p for p in os.listdir(where) if p.endswith(SUFFIX))
    if len(names) > MAX_FILES:
        problems.append(f"{where} holds {len(names)} key files; only the first {MAX_FILES} are read")
    for entry in names[:MAX_FILES]:
        path = where / entry
        try:
            key = _read_one(path, entry[: -len(SUFFIX)])
        except KeyFileError as exc:
            problems.append(str(exc))
            continue
        if key.id in keys:
            problems.append(f"{path}: the same key as {keys[key.id].name}.pub; the first name is used")
            continue
        keys[key.id] = key
    return OperatorKeys(str(where), keys, tuple(problems))


def _read_one(path: Path, name: str) -> PublicKey:
    data = read_key_file(path, MAX_FILE_BYTES, lambda st: _unsafe(st, str(path)))
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{path} is over {MAX_FILE_BYTES} bytes: not a key file")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise KeyFileError(f"{path} is not text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"{path}: expected one key line (piclusterctl keygen prints it), found {len(lines)}")
    try:
        return PublicKey.parse(lines[0], name)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def describe(keys: OperatorKeys) -> str:
    """One line for the log: which keys, from where."""
    names = ", ".join(echo(n, 40) for n in keys.names) or "none"
    return f"dir={keys.directory} keys={len(keys.keys)} names={names}"
