"""A Unix socket's address holds at most 107 bytes (``sun_path``). A deeper path, such as one under a test's
temporary directory or a long ``$RUNTIME_DIRECTORY``, is reached through a descriptor of its directory
(``/proc/self/fd/N/NAME``), which the kernel resolves like the path itself."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

MAX_SUN_PATH = 107


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """An address for ``bind``/``connect`` that names ``path``, valid inside the ``with``."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)
