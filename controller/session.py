"""The controller's MQTT session: one Link whose messages land on a queue the CLI thread reads."""

from __future__ import annotations

import collections
import getpass
import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from controller.args import CommandFailed
from nodeagent.mqtt.link import Link
from nodeagent.mqtt.settings import ENV_PASSWORD_FILE, ENV_USERNAME, Broker, Credentials
from nodeagent.protocol import Command, Event, Topics, encode
from nodeagent.protocol.envelope import payload_digest
from nodeagent.security.keys import SigningKey

CONNECT_TIMEOUT_S = 5.0
SENT_KEPT = 4096  # digests of the commands this session sent, to recognise refusals of its own
STATE_LEAVES = ("status", "facts", "telemetry", "power")  # retained, latest value only


class BrokerUnreachable(CommandFailed):
    """The broker did not accept a connection in time."""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname().split(".")[0])[:32]


def persistent_client_id(cluster: str) -> str:
    """The controller's fixed identity for its persistent session: one per user, host and cluster
    (``PICLUSTER_CLIENT_ID`` or ``--client-id`` to choose another)."""
    user = "".join(c if c.isalnum() or c in "-_" else "-" for c in getpass.getuser())[:32]
    return f"piclusterctl-{user}-{_host()}-{cluster}"


Tap = Callable[[str, bytes], None]


class Session:
    """A controller connection. Use as a context manager.

    By default a throw-away clean session. With ``client_id`` and ``clean=False`` it is the operator's persistent
    session: the broker keeps its subscriptions and queues QoS 1 messages while no piclusterctl runs, and hands
    them over at the next connect. ``taps`` see every message on paho's thread before it is acknowledged (the
    history writes there, so an acknowledged event is already on disk).
    """

    def __init__(
        self,
        broker: Broker,
        cluster: str,
        *,
        subscriptions: tuple[str, ...] = (),
        client_id: str = "",
        clean: bool = True,
        taps: tuple[Tap, ...] = (),
    ) -> None:
        self.topics = Topics(cluster)
        self.client_id = client_id or f"piclusterctl-{_host()}-{os.getpid()}"
        self.inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self.taps = taps
        # The operator's login, if the broker wants one: PICLUSTER_MQTT_* (the --mqtt-* options set them).
        creds = Credentials.from_env(os.environ)
        self.connects = 0  # sessions the broker has granted so far: more than one means events may have been missed
        self._key: SigningKey | bool | None = False  # the operator's key, loaded at the first command (False: not yet)
        self.sent: set[str] = set()  # digests of the commands sent: a node's refusal quotes the one it refused
        self._sent_order: collections.deque[str] = collections.deque()
        self.link = Link(
            self.client_id,
            broker,
            credentials=creds,
            clean_session=clean,
            on_message=self._received,
            on_connect=self._connected,
        )
        for topic in (*subscriptions, self.topics.sync(self.client_id)):
            self.link.subscribe(topic, qos=0 if self._state(topic) else 1)

    def subscribe(self, *topics: str) -> None:
        """More subscriptions on the open session (a run's recorder, once it knows the job's nodes); the broker
        sends their retained messages as it does at connect."""
        for topic in topics:
            self.link.subscribe(topic, qos=0 if self._state(topic) else 1)

    def _state(self, topic: str) -> bool:
        """A node's retained state (status, facts, telemetry, power): read at QoS 0, so a fleet's snapshot is not
        held to the broker's QoS 1 window (Mosquitto's max_inflight_messages, 20) nor cut at its queue limit
        (max_queued_messages, 1000 by default: a 1,000-node snapshot lost its facts). Its latest value is
        retained, so nothing a session sees is lost that a new snapshot would not show."""
        return topic.startswith(f"{self.topics.base}/node/") and topic.rpartition("/")[2] in STATE_LEAVES

    def __enter__(self) -> Session:
        self.link.start()
        if not self.link.wait_connected(CONNECT_TIMEOUT_S):
            self.link.stop()
            if self.link.refused:
                raise BrokerUnreachable(
                    f"the broker at {self.link.broker} refused the connection: {self.link.refused}. Log in as the "
                    f"operator: --mqtt-user NAME --mqtt-password-file FILE (or {ENV_USERNAME} and "
                    f"{ENV_PASSWORD_FILE}); docs/operations.md, 'The broker'"
                )
            if self.link.failed:
                raise BrokerUnreachable(f"cannot connect to the broker: {self.link.failed}")
            raise BrokerUnreachable(
                f"cannot reach the broker at {self.link.broker} within {CONNECT_TIMEOUT_S:g} s: is it running? "
                "Set --broker URL or PICLUSTER_BROKER"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def _connected(self, session_present: bool) -> None:
        self.connects += 1

    def _received(self, topic: str, payload: bytes, retained: bool) -> None:
        for tap in self.taps:
            tap(topic, payload)
        self.inbox.put(Received(topic, payload, retained))

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.link.publish(topic, payload, qos=qos)

    @property
    def key(self) -> SigningKey | None:
        """The operator's signing key (controller/signing.py), None when there is none: commands go unsigned."""
        if self._key is False:
            from controller.signing import operator_key

            self._key = operator_key(os.environ)
        return self._key  # type: ignore[return-value]

    def command(self, topic: str, cmd: Command) -> bytes:
        """Publish ``cmd`` on ``topic``, signed with the operator's key when there is one: every command
        piclusterctl sends goes through here. Returns the payload."""
        body = encode(cmd)
        if (key := self.key) is not None:
            from nodeagent.security.seal import seal

            body = seal(key, topic, body)
        digest = payload_digest(topic, body)
        self.sent.add(digest)
        self._sent_order.append(digest)
        if len(self._sent_order) > SENT_KEPT:
            self.sent.discard(self._sent_order.popleft())
        self.link.publish(topic, body, qos=1)
        return body

    def refused_ours(self, event: Event) -> bool:
        """True when ``event`` is a node's refusal of a command this session sent (its signature, or the lack of
        one): the reason is for the operator. A refusal quoting another payload is about someone else's copy."""
        return event.kind == "rejected" and "auth" in event.data and event.data.get("digest") in self.sent

    def snapshot(self, timeout_s: float = 2.0) -> Iterator[Received]:
        """Every retained message for the subscriptions, ending at our sync marker (or ``timeout_s``)."""
        marker = os.urandom(8)
        sync = self.topics.sync(self.client_id)
        # QoS 1 like the subscriptions: the broker queues it behind the retained QoS 1 messages it has not sent
        # yet (it sends only max_inflight_messages at a time), where a QoS 0 marker would overtake them.
        self.link.publish(sync, marker, qos=1)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                return
            if msg.topic == sync:
                if msg.payload == marker:
                    return
                continue
            yield msg

    def get(self, timeout_s: float) -> Received | None:
        """The next message, or None after ``timeout_s`` with none."""
        try:
            return self.inbox.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
