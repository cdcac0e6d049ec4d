"""The thin I/O side of Home Assistant: publish discovery and state through the agent's link, listen to HA.

Runs on the agent's loop thread (``tick`` from ``step()``, ``handle`` from ``dispatch()``). HA's button and
select payloads become the same ``Command`` piclusterctl sends and go to the agent's command handling for this
node's own bridge (``Commands.local_command``), which obeys only ``fan`` and ``identify`` from it and validates
them as the wire does. They never cross the broker as commands: Home Assistant cannot sign, so the HA topics'
only gate is the broker's ACL, and what can come through them is capped by the code, not by a key.

Discovery goes out on every (re)connect and again a random moment after HA's birth message (HA forgets MQTT
entities when it restarts; many nodes answering at once would be a burst).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import subprocess
import time
from collections.abc import Callable
from typing import Any

from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.ha.discovery import PRESS, Discovery, chassis_document, chassis_name, ha_command_topic, node_document
from nodeagent.ha.entities import command_names
from nodeagent.ha.state import drives, has_pcie, significant, state_document
from nodeagent.mqtt.link import Link
from nodeagent.mqtt.ratelog import RateLog
from nodeagent.protocol import Command, NodeFacts, Telemetry, Topics
from nodeagent.protocol.topics import discovery_topic

log = logging.getLogger("picluster.ha")
bad_input = RateLog(log)  # HA command topics are open to whoever reaches the broker

_ids = itertools.count(1)


class HaBridge:
    """Home Assistant for one node. ``deliver(command)`` hands a command to the node's local command path;
    ``busy()`` says whether a job runs (restart and reboot wait for it); ``note(message)`` logs a line to the
    node's events."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        topics: Topics,
        node: str,
        link: Link,
        *,
        deliver: Callable[[Command], None],
        busy: Callable[[], bool],
        note: Callable[[str], None],
        drives_chassis: bool,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.node = node
        self.link = link
        self.deliver = deliver
        self.busy = busy
        self.note = note
        self.drives_chassis = drives_chassis
        self.rand = rand
        self.facts: NodeFacts | None = None
        self._commands = {
            ha_command_topic(topics, node, c): c
            for c in command_names(allow_restart=cfg.allow_restart, allow_reboot=cfg.allow_reboot)
        }
        self._sent_state: dict[str, Any] | None = None
        self._sent_state_at = float("-inf")
        self._devices: tuple[tuple[str, ...], bool] | None = None  # (drives, pcie) the last discovery named
        self._resend_at: float | None = None
        self._system_proc: subprocess.Popen[bytes] | None = None
        if cfg.enabled:
            link.subscribe(cfg.birth, qos=1)
            for topic in self._commands:
                link.subscribe(topic, qos=1)

    # --- what the agent calls ------------------------------------------------------------------------------
    def owns(self, topic: str) -> bool:
        return self.cfg.enabled and (topic == self.cfg.birth or topic in self._commands)

    def connected(self, facts: NodeFacts) -> None:
        """After every (re)connect: discovery at once (a restarted broker has lost it), or its removal when
        Home Assistant is disabled (a node that had it enabled before leaves no ghost device)."""
        self.facts = facts
        if not self.cfg.enabled:
            self.link.publish(discovery_topic(self.cfg.prefix, self.node), b"", qos=1, retain=True)
            return
        self._devices = None  # the next tick sends discovery, then the state

    def tick(self, telemetry: Telemetry, now: float, last_hpl_gflops: float | None = None) -> None:
        """Every agent tick (``now``: a steady clock): the state on change or interval, discovery when due."""
        if not self.cfg.enabled or self.facts is None or not self.link.connected:
            return
        state = state_document(telemetry, last_hpl_gflops)
        devices = (drives(state), has_pcie(state))
        if devices != self._devices or (self._resend_at is not None and now >= self._resend_at):
            self._publish_discovery(state)
            self._sent_state = None  # HA subscribes to the state anew: send it right after
        due = now - self._sent_state_at >= self.cfg.state_interval_s
        if due or significant(self._sent_state, state, self.cfg.significant_temp_c):
            self.link.publish(self.topics.state(self.node), json.dumps(state).encode(), qos=0, retain=True)
            self._sent_state, self._sent_state_at = state, now

    def handle(self, topic: str, payload: bytes, retained: bool, now: float) -> None:
        """HA's birth message or one of its commands."""
        text = payload.decode("utf-8", errors="replace").strip()
        if topic == self.cfg.birth:
            if text == "online" and not retained:
                delay = self.rand() * self.cfg.resend_delay_max_s
                self._resend_at = now + delay
                log.info("event=ha_birth resend_in_s=%.1f", delay)
            return
        if retained:
            bad_input.warning(
                "retained_command",
                "event=retained_command_ignored topic=%s fix='Home Assistant commands are not retained'",
                topic,
            )
            return
        command = self._commands[topic]
        if command == "fan":
            self._deliver(Command(id=_new_id("fan"), cmd="fan", nodes=(self.node,), value=text, sender="homeassistant"))
        elif text != PRESS:
            bad_input.warning(
                "ha_bad_payload", "event=ha_bad_payload topic=%s payload=%r expected=%r", topic, text[:40], PRESS
            )
        elif command == "identify":
            self._deliver(Command(id=_new_id("identify"), cmd="identify", nodes=(self.node,), sender="homeassistant"))
        else:
            self._system(command)

    # --- inside --------------------------------------------------------------------------------------------
    def _deliver(self, cmd: Command) -> None:
        self.deliver(cmd)

    def _publish_discovery(self, state: dict[str, Any]) -> None:
        assert self.facts is not None
        self._resend_at = None
        devices = (drives(state), has_pcie(state))
        docs: list[Discovery] = [node_document(self.facts, self.cfg, self.topics, drives=devices[0], pcie=devices[1])]
        chassis = chassis_name(self.cfg, self.topics.cluster, self.facts.board)
        if self.drives_chassis and chassis is not None:
            docs.append(chassis_document(self.facts, self.cfg, self.topics, chassis))
        for doc in docs:
            self.link.publish(doc.topic, doc.payload, qos=1, retain=True)
        if devices != self._devices:
            log.info("event=ha_discovery topic=%s entities=%d", docs[0].topic, len(docs[0].document["cmps"]))
        self._devices = devices

    def _system(self, command: str) -> None:
        """restart (the agent) or reboot (the node): only when enabled (else not even subscribed), never while
        a job runs, always logged as an event first."""
        argv = self.cfg.restart_command if command == "restart" else self.cfg.reboot_command
        if self.busy():
            self.note(f"{command} requested by Home Assistant refused: a job is running (cancel it first)")
            return
        self.note(f"{command} requested by Home Assistant: running {' '.join(argv)}")
        try:
            # Its own session: a restart of the agent's unit must not be killed with the agent it restarts.
            self._system_proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error(
                "event=ha_%s_failed argv=%r error=%r fix='set homeassistant.%s_command'",
                command,
                argv,
                str(exc),
                command,
            )
            self.note(f"{command} failed: {argv[0]}: {exc.strerror or exc}")


def _new_id(what: str) -> str:
    return f"ha-{what}-{int(time.time() * 1000)}-{next(_ids)}"
