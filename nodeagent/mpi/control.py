"""Files the agent writes for a cluster job and the job only reads: a member's ``member.json`` (its leader and the
leader's key, from the operator's job) and ``launch.json`` (the daemon's checked argv).

They live in ``<state_dir>/control/<job id>/``, which the agent (root) owns and the jobs user can only read: the
job directory is the job's own, and a file the agent wrote there could be swapped for a symlink, or rewritten
(another leader, another daemon line), by the job. Files are replaced atomically and opened without following
links.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

MEMBER_FILE = "member.json"  # written when a member job is accepted: who the leader is and its key
LAUNCH_FILE = "launch.json"  # written when the leader's launch request is accepted: the daemon's argv
NO_LAUNCH_EXIT = 3  # the member's exit status when no launch came (nodeagent/mpi/member.py)
MAX_FILE = 256 * 1024
KEEP = 64  # control directories kept: a directory is a few hundred bytes; the newest ones belong to live jobs


class ControlDir:
    """``root``/<job id>/<file>: readable by everyone (0755/0644), writable by the agent alone."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def of(self, job_id: str) -> Path:
        return self.root / job_id

    def write(self, job_id: str, name: str, data: dict[str, Any]) -> Path:
        """Replace ``name`` for ``job_id`` with ``data`` (JSON) at once: a reader never sees half a file."""
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        where = self.of(job_id)
        where.mkdir(mode=0o755, exist_ok=True)
        os.chmod(where, 0o755)  # against a umask that would keep the jobs user out
        tmp = where / f".{name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, where / name)
        return where / name

    def read(self, job_id: str, name: str) -> dict[str, Any] | None:
        """The file's JSON object, or None when there is none (or it is not one)."""
        return read_json(self.of(job_id) / name)

    def exists(self, job_id: str, name: str) -> bool:
        return (self.of(job_id) / name).is_file()

    def prune(self, keep: int = KEEP) -> None:
        """Keep the newest ``keep`` directories."""
        try:
            dirs = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for old in dirs[: max(0, len(dirs) - keep)]:
            shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path`` opened without following a link; None when absent or not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE + 1)
    try:
        value = json.loads(data) if len(data) <= MAX_FILE else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
