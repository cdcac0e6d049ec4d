"""A paho-mqtt 1.6 (Debian 12's) workaround: its network thread must survive a TLS error after the handshake.

paho 1.6 catches only connection errors when it reads from the socket. Under TLS 1.3 a broker that refuses the
client's certificate (or wants one) says so in an alert that arrives after the handshake, on the first read, as an
``ssl.SSLError``: paho's thread ends with a traceback and the client never connects again, silently. paho 2.x
handles it. Here the thread's main function is wrapped: the error is reported, the socket closed, and paho's own
loop resumes, which reconnects with its back-off. It touches paho 1.6 internals (``_thread_main``, ``_sock_close``),
which Debian 12 pins at 1.6.1.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


def keep_thread_alive(client: Any, on_tls_error: Callable[[ssl.SSLError], None]) -> None:
    """Make ``client``'s ``loop_start`` thread carry on after an ``ssl.SSLError``, calling ``on_tls_error`` first."""

    def main() -> None:
        while True:
            try:
                client.loop_forever(retry_first_connection=True)
                return
            except ssl.SSLError as exc:
                client._sock_close()
                on_tls_error(exc)
                if client._thread_terminate:
                    return

    client._thread_main = main
