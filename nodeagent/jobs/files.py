"""Files in a job's directory, which the job owns: the root agent never follows a link a job planted there.

A job may replace anything in its own directory between the agent's looks (rename, unlink, a symlink to
``/etc/shadow``, a FIFO, a hard link). So the agent

- creates the files it hands the job (``output.log``, a machine-output file) itself, before the job runs, with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``, and reads them back through the descriptor it kept (``AgentFile``), never
  through the name;
- opens the files the job wrote (``hpccoutf.txt``, ``stress.yaml``) relative to a descriptor of the job directory,
  with ``O_NOFOLLOW | O_NONBLOCK``, and reads one only when it is a regular file owned by the jobs user, and then at
  most ``limit`` bytes (``read_job_file``).

The job directory itself sits in the agent's work directory, which the job cannot write, so its path cannot be
swapped; only the last component needs the checks.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A name in a job directory that is not a plain file of the jobs user: a link, a FIFO, a directory, a file of
    another owner. Its message says which, for the job's failure reason."""


def _read_at_most(fd: int, limit: int, offset: int = 0) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.pread(fd, min(left, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_job_file(directory: Path, name: str, *, owner: int, limit: int) -> str | None:
    """The text of ``directory/name`` as the job left it, at most ``limit`` bytes; None when it does not exist.

    Raises UnsafeFile when the name is a symlink or not a regular file owned by uid ``owner`` (the jobs user), and
    OSError for other failures (its strerror says what)."""
    data = read_job_bytes(directory, name, owner=owner, limit=limit)
    return None if data is None else data.decode(errors="replace")


def read_job_bytes(directory: Path, name: str, *, owner: int, limit: int, offset: int = 0) -> bytes | None:
    """Like ``read_job_file``, as bytes from ``offset`` on (a log read as it grows)."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")
    dir_fd = os.open(directory, _DIR_FLAGS)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise UnsafeFile(errno.ELOOP, f"{name} in the job directory is a symbolic link; not followed") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"{name} in the job directory is not a regular file; not read")
        if st.st_uid != owner:
            raise UnsafeFile(
                errno.EPERM, f"{name} in the job directory belongs to uid {st.st_uid}, not the jobs user; not read"
            )
        return _read_at_most(fd, limit, offset)
    finally:
        os.close(fd)


class AgentFile:
    """A file the agent creates in a job directory before the job runs and reads back through its own descriptor.

    ``fd`` is open for writing (the job's stdout or the agent's copy of its output goes there); ``text()`` reads
    what was written, whatever the job did to the name since."""

    def __init__(self, directory: Path, name: str, mode: int = 0o644) -> None:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        self.name = name
        dir_fd = os.open(directory, _DIR_FLAGS)
        try:
            # O_EXCL: a name the job (or another job of the same user) planted first makes this fail, never followed.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fd = os.open(name, flags, mode, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def text(self, limit: int) -> str:
        """What the file holds, at most ``limit`` bytes."""
        return _read_at_most(self.fd, limit).decode(errors="replace")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
