"""Big buffers go back to the system as soon as they are freed: glibc's mmap threshold held at 128 KiB.

glibc serves an allocation above its mmap threshold (128 KiB at start) with its own mapping and unmaps it on
free, but after freeing one it raises the threshold to that block's size, up to 32 MiB: after one 4 MiB message,
the next ones come from the heap, whose freed space the process keeps. An agent receives whatever anyone reaching
the broker publishes (a quarter megabyte under the shipped broker's limit, megabytes without it), so the agent
holds the threshold where it starts: each big payload's memory is returned the moment the payload is dropped.
tests/security/test_fuzz.py measures it.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's malloc.h; setting it also stops the dynamic adjustment of it and of M_TRIM_THRESHOLD
MMAP_THRESHOLD = 128 * 1024


def hold_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``size`` bytes; False where the C library has no ``mallopt`` (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, size))
