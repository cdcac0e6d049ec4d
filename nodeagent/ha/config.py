"""[homeassistant]: how the node shows up in Home Assistant (docs/home-assistant.md)."""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.errors import ConfigError


@dataclass(frozen=True)
class HomeAssistantConfig:
    """[homeassistant]: MQTT discovery, the JSON state topic and the commands Home Assistant may send."""

    enabled: bool = True
    prefix: str = "homeassistant"  # HA's discovery prefix (its MQTT integration options)
    birth_topic: str = ""  # empty: <prefix>/status, where HA says "online" when it (re)starts
    resend_delay_max_s: float = 5.0  # after HA's birth, discovery is re-sent after a random delay up to this
    state_interval_s: float = 10.0  # the JSON state topic, at most this far apart (and on significant change)
    expire_after_s: float = 60.0  # HA shows a sensor unavailable when no state came for this long; 0: never
    significant_temp_c: float = 3.0  # a temperature change at least this large publishes the state at once
    chassis: str = ""  # chassis name for via_device; empty: the cluster name on boards that sit in a chassis
    allow_restart: bool = False  # publish a "restart agent" button and obey it
    allow_reboot: bool = False  # publish a "reboot" button and obey it
    restart_command: tuple[str, ...] = ("systemctl", "restart", "picluster-agent")
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")

    def __post_init__(self) -> None:
        object.__setattr__(self, "restart_command", tuple(self.restart_command))
        object.__setattr__(self, "reboot_command", tuple(self.reboot_command))
        checks = [
            ("prefix", _topic_level(self.prefix), "a topic without '+', '#' or a leading/trailing '/'"),
            ("birth_topic", self.birth_topic == "" or _topic_level(self.birth_topic), "a topic without wildcards"),
            ("resend_delay_max_s", self.resend_delay_max_s >= 0, "a number at least 0"),
            ("state_interval_s", self.state_interval_s > 0, "a number above 0"),
            (
                "expire_after_s",
                self.expire_after_s == 0 or self.expire_after_s > self.state_interval_s,
                "0 (never) or a number above state_interval_s",
            ),
            ("significant_temp_c", self.significant_temp_c > 0, "a number above 0"),
            ("chassis", all(c.isalnum() or c in "-_" for c in self.chassis), "letters, digits, '-' or '_'"),
            ("restart_command", bool(self.restart_command), "a command line as a list of strings"),
            ("reboot_command", bool(self.reboot_command), "a command line as a list of strings"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"homeassistant.{key}: expected {expected}, got {getattr(self, key)!r}")

    @property
    def birth(self) -> str:
        return self.birth_topic or f"{self.prefix}/status"


def _topic_level(topic: str) -> bool:
    return bool(topic) and not any(c in topic for c in "+#\0") and not topic.startswith("/") and not topic.endswith("/")
