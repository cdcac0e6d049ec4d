"""The MQTT session, through paho-mqtt 1.6 (Debian 12's python3-paho-mqtt) or 2.x (PyPI, Debian 13).

One ``Link`` owns one paho client on paho's own network thread, or, given a ``NetLoop`` (``mqtt/netloop.py``:
many simulated nodes in one process), on that loop's shared thread. It sets the will, reconnects with back-off,
re-subscribes after every reconnect, and turns paho's two callback styles into one. Callbacks here never raise:
they hand plain values to the owner's callbacks (the agent queues them for its single loop thread).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from nodeagent.mqtt import connect_error, paho16
from nodeagent.mqtt.netloop import NetLoop, set_nodelay
from nodeagent.mqtt.settings import Broker, Credentials

log = logging.getLogger("picluster.link")

PAHO2 = hasattr(mqtt, "CallbackAPIVersion")


@dataclass(frozen=True)
class Will:
    """Last will: what the broker publishes for us when the connection drops without a clean goodbye."""

    topic: str
    payload: bytes | str
    qos: int = 1
    retain: bool = True


# MQTT 3.1.1 CONNACK codes: why a broker refused, in words an operator can act on.
REFUSALS = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker is unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def _code(rc: Any) -> int:
    """paho 2.x hands ReasonCode objects, 1.6 hands ints; both compare to 0 for success."""
    value = getattr(rc, "value", rc)
    return int(value) if isinstance(value, int) else 0 if str(rc) == "Success" else 1


def _session_present(flags: Any) -> bool:
    if isinstance(flags, dict):
        return bool(flags.get("session present"))
    return bool(getattr(flags, "session_present", False))


class Link:
    """An MQTT session that survives broker restarts. Thread-safe ``publish``; callbacks run on paho's thread."""

    def __init__(
        self,
        client_id: str,
        broker: Broker,
        *,
        credentials: Credentials | None = None,
        will: Will | None = None,
        clean_session: bool = True,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[int], None] | None = None,
        on_message: Callable[[str, bytes, bool], None] | None = None,
        on_publish: Callable[[int], None] | None = None,
        net: NetLoop | None = None,
    ) -> None:
        self.broker = broker
        self.net = net
        self.reconnect_min_s = max(1, round(reconnect_min_s))
        self.reconnect_max_s = round(reconnect_max_s)
        self.client_id = client_id
        self._keepalive = keepalive_s
        self._subs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self.refused = ""  # why the broker last refused the connection, in words ("" until it does)
        self.failed = ""  # why connecting keeps failing where retrying alone will not help (TLS), in words
        self._socket_open = False
        self._user_connect = on_connect
        self._user_disconnect = on_disconnect
        self._user_message = on_message
        self._user_publish = on_publish
        if PAHO2:
            self._client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
            )
            self._client.on_connect = lambda c, u, flags, rc, props=None: self._on_connect(flags, rc)
            self._client.on_disconnect = lambda c, u, flags, rc, props=None: self._on_disconnect(rc)
            self._client.on_publish = lambda c, u, mid, rc=None, props=None: self._on_publish(mid)
        else:  # paho 1.6
            self._client = mqtt.Client(client_id=client_id, clean_session=clean_session)
            self._client.on_connect = lambda c, u, flags, rc: self._on_connect(flags, rc)
            self._client.on_disconnect = lambda c, u, rc: self._on_disconnect(rc)
            self._client.on_publish = lambda c, u, mid: self._on_publish(mid)
        self._client.on_message = self._on_message
        self._client.on_socket_open = self._on_socket_open
        # paho calls this inside its except block: the exception at hand says why (a TLS problem needs a person).
        self._client.on_connect_fail = lambda c, u: self._connect_failed(
            connect_error.explain(sys.exc_info()[1], broker)
        )
        if net is not None:  # the shared loop reads and writes; paho tells it when there is output
            self._client.on_socket_close = lambda c, u, sock: net.closed(self, sock)
            self._client.on_socket_register_write = lambda c, u, sock: net.want_write(self)
        elif not PAHO2:
            paho16.keep_thread_alive(self._client, self._tls_error)
        self._client.reconnect_delay_set(min_delay=self.reconnect_min_s, max_delay=self.reconnect_max_s)
        # QoS 1 messages wait in paho's queue while the broker is away; unbounded by design, the spool bounds it.
        self._client.max_queued_messages_set(0)
        creds = credentials or Credentials()
        if creds.username:
            self._client.username_pw_set(creds.username, creds.password or None)
        if broker.tls:
            self._client.tls_set(
                ca_certs=creds.ca_file or None,
                certfile=creds.cert_file or None,
                keyfile=creds.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The paho client (for the shared loop)."""
        return self._client

    def start(self, delay_s: float = 0.0) -> None:
        """Connect in the background; paho's thread (or the shared loop) retries until the broker answers.
        ``delay_s``: the shared loop's first attempt waits this long (a fleet spreads its connections)."""
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self._keepalive)
        if self.net is not None:
            self.net.add(self, delay_s)
        else:
            self._client.loop_start()

    def stop(self, goodbye: Will | None = None, timeout_s: float = 2.0) -> None:
        """Publish ``goodbye`` (the clean-exit twin of the will, which a clean disconnect does not send), then
        disconnect and join paho's thread."""
        self._stopping = True
        if goodbye is not None and self._connected.is_set():
            info = self._client.publish(goodbye.topic, goodbye.payload, qos=goodbye.qos, retain=goodbye.retain)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s) if PAHO2 else _wait(info, timeout_s)
        self._client.disconnect()
        if self.net is not None:
            self.net.remove(self)
        else:
            self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected; False after ``timeout_s``, or as soon as the broker refuses (``refused``)."""
        deadline = time.monotonic() + timeout_s
        while not self._connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self.refused or self.failed or time.monotonic() >= deadline:
                return self._connected.is_set()
        return True

    # --- use -------------------------------------------------------------------------------------------------
    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        with self._lock:
            self._subs[topic] = qos
        if self._connected.is_set():
            self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        """Stop following ``topic`` (now, and after reconnects)."""
        with self._lock:
            known = self._subs.pop(topic, None) is not None
        if known and self._connected.is_set():
            self._client.unsubscribe(topic)

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False) -> int | None:
        """Queue a message; returns its message id, or None when QoS 0 could not be sent (not connected)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_QUEUE_SIZE) and qos == 0:
            return None
        return info.mid

    # --- paho callbacks (paho's thread; must not raise) ------------------------------------------------------
    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._socket_open = True
        set_nodelay(sock)
        if self.net is not None:
            self.net.opened(self, sock)

    def connect_failed(self, exc: Exception) -> None:
        """The shared loop's connection attempt, or a read or write of the session, raised: say why when a person
        must act (TLS), and treat a live session as lost (the loop reconnects it)."""
        self._connect_failed(connect_error.explain(exc, self.broker))
        if self._connected.is_set():
            self._on_disconnect(mqtt.MQTT_ERR_CONN_LOST)

    def _on_connect(self, flags: Any, rc: Any) -> None:
        code = _code(rc)
        if code != 0:
            self.refused = REFUSALS.get(code, f"refused with code {code}")
            log.warning("event=mqtt_refused broker=%s reason=%s", self.broker, rc)
            return
        self.refused = self.failed = ""
        with self._lock:
            subs = list(self._subs.items())
        if subs:
            self._client.subscribe(subs)
        self._connected.set()
        if self.net is not None:
            self.net.connected(self)
        log.info("event=mqtt_connected broker=%s client_id=%s", self.broker, self.client_id)
        self._call(self._user_connect, _session_present(flags))

    def _on_disconnect(self, rc: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if not was and self._socket_open and not self._stopping and not self.refused and not self.failed:
            self._connect_failed(connect_error.closed_early(self.broker))
        self._socket_open = False
        if was and not self._stopping:
            log.warning("event=mqtt_lost broker=%s reason=%s (reconnecting with back-off)", self.broker, rc)
        if self.net is not None and not self._stopping:
            self.net.lost(self)
        self._call(self._user_disconnect, _code(rc))

    def _tls_error(self, exc: ssl.SSLError) -> None:
        """paho 1.6's thread met a TLS error after the handshake (paho16.py): the connection is gone."""
        self._connect_failed(connect_error.explain(exc, self.broker))
        self._on_disconnect(mqtt.MQTT_ERR_CONN_LOST)

    def _connect_failed(self, reason: str) -> None:
        """A connection attempt failed for a reason a person must fix: say it once, and let waiters see it."""
        if reason and reason != self.failed:
            log.warning("event=mqtt_connect_failed broker=%s reason=%r", self.broker, reason)
        self.failed = reason or self.failed

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._call(self._user_message, msg.topic, bytes(msg.payload), bool(msg.retain))

    def _on_publish(self, mid: int) -> None:
        self._call(self._user_publish, mid)

    @staticmethod
    def _call(fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a bug in a handler must not kill paho's network thread
            log.exception("event=callback_error callback=%s", getattr(fn, "__name__", fn))


def _wait(info: Any, timeout_s: float) -> None:
    """paho 1.6's wait_for_publish() has no timeout."""
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (info.wait_for_publish(), done.set()), daemon=True)
    waiter.start()
    done.wait(timeout_s)
