"""systemd's notify protocol and watchdog for the ``Type=notify`` unit; every call is a no-op outside systemd.

``notify()`` goes through systemd-python (Debian's python3-systemd) when it is installed, else sends the same
datagram itself to ``$NOTIFY_SOCKET`` (a path, or an abstract socket written ``@name``). ``Notifier`` is what the
loop calls after each completed tick: ``READY=1`` once, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, and
``STATUS=`` whenever the one-line summary changes. A loop that hangs stops pinging, and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodeagent.hw.base import Sample

try:
    from systemd import daemon as _daemon
except ImportError:  # a venv or a machine without python3-systemd: the datagram below is the whole protocol
    _daemon = None

log = logging.getLogger("picluster.agent")


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``RELOADING=1`` or ``STOPPING=1`` (several at once are
    fine). Returns False when there is no ``$NOTIFY_SOCKET`` or the send failed; never raises."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields)
    try:
        if _daemon is not None and env is os.environ:
            return bool(_daemon.notify(message))
        target = "\0" + address[1:] if address.startswith("@") else address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
        return True
    except (OSError, ValueError):
        return False


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to ping: half of ``$WATCHDOG_USEC``, or None when there is no watchdog for this process."""
    env = os.environ if env is None else env
    if env.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Tells systemd about the loop. ``enabled`` is False outside systemd, so callers can skip building STATUS."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.enabled = bool(self.env.get("NOTIFY_SOCKET"))
        self.interval_s = watchdog_interval_s(self.env)
        self.ready = False
        self._last_ping = float("-inf")
        self._status = ""

    def after_tick(self, now: float, status: str, *, ready: bool) -> None:
        """Call after every completed tick (``now`` monotonic). ``ready``: the start-up work is done."""
        fields = []
        if ready and not self.ready:
            self.ready = True
            fields.append("READY=1")
        if self.interval_s is not None and now - self._last_ping >= self.interval_s:
            self._last_ping = now
            fields.append("WATCHDOG=1")
        if status != self._status:
            self._status = status
            fields.append(f"STATUS={status}")
        if fields and self.enabled:
            notify(*fields, env=self.env)

    def send(self, *fields: str) -> bool:
        """Anything else (``RELOADING=1``, ``STOPPING=1``): only when enabled."""
        return self.enabled and notify(*fields, env=self.env)

    def check_tick(self, tick_s: float) -> None:
        """Warn when ticks are too slow for the watchdog (it is pinged from completed ticks only)."""
        if self.interval_s is not None and tick_s > self.interval_s:
            log.warning(
                "event=tick_slower_than_watchdog tick_s=%g ping_every_s=%g fix='lower agent.tick_s or raise "
                "WatchdogSec'",
                tick_s,
                self.interval_s,
            )


def status_line(sample: Sample | None, broker: str, connected: bool, job: str | None) -> str:
    """The unit's one-line ``STATUS=``: temperature, fan, the broker session and the job."""
    temp_c, duty = (sample.temp_c, sample.fan_duty_pct) if sample is not None else (None, None)
    temp = f"{temp_c:.0f} °C" if temp_c is not None else "temperature unreadable"
    fan = f", fan {duty:.0f} %" if duty is not None else ""
    session = f"{'connected to' if connected else 'no session with'} {broker}"
    return f"{temp}{fan}; {session}; {f'job {job}' if job else 'idle'}"
