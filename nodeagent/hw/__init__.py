"""Hardware access: one ``Backend`` per node, real (sysfs under a root) or simulated, chosen by ``make_backend``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nodeagent.errors import ConfigError
from nodeagent.hw.base import Backend, Facts, Sample
from nodeagent.hw.real import RealBackend
from nodeagent.hw.root import SysfsRoot
from nodeagent.hw.sim import SimBackend, SimConfig
from nodeagent.hw.system import device_tree_model

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "Facts",
    "RealBackend",
    "Sample",
    "SimBackend",
    "SimConfig",
    "SysfsRoot",
    "make_backend",
]

log = logging.getLogger(__name__)

BACKEND_KINDS: tuple[str, ...] = ("auto", "real", "sim")


def make_backend(
    kind: str,
    *,
    root: str = "/",
    node_id: str,
    sim: SimConfig | None = None,
    load_fn: Callable[[], float] = lambda: 0.0,
    **real_options: Any,
) -> Backend:
    """The backend ``kind`` (``auto``, ``real`` or ``sim``) for node ``node_id``.

    ``auto`` takes the real backend on a Raspberry Pi (the device-tree model under ``root`` says so). On any
    other Linux machine it logs a warning and still takes the real backend, since a PC has thermal zones and
    meminfo too; where ``root`` holds no Linux ``/proc`` at all it logs a warning and takes the simulator.
    ``sim`` and ``load_fn`` are for the simulator; ``real_options`` go to ``RealBackend`` (board, intervals,
    input monitors; ``config.real_backend_options`` builds them from ``[hardware]``).
    """
    sysfs = SysfsRoot(root)
    if kind == "auto":
        kind = _detect_kind(sysfs)
    if kind == "real":
        return RealBackend(sysfs, **real_options)
    if kind == "sim":
        return SimBackend(node_id, sim or SimConfig(), load_fn, host_root=sysfs)
    raise ConfigError(f"hardware.backend: expected one of {', '.join(BACKEND_KINDS)}, got {kind!r}")


def _detect_kind(sysfs: SysfsRoot) -> str:
    """``real`` or ``sim`` for ``auto``; logs a warning unless this is a Raspberry Pi."""
    model = device_tree_model(sysfs)
    if "Raspberry Pi" in model:
        return "real"
    if sysfs.exists("proc/meminfo"):
        log.warning(
            "hw backend auto: not a Raspberry Pi (model=%r), using the real backend anyway; "
            "set [hardware] backend to silence this",
            model,
        )
        return "real"
    log.warning("hw backend auto: no Linux /proc under root=%s, using the simulator", sysfs.root)
    return "sim"
