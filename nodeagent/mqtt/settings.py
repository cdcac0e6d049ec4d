"""Where the broker is and how to log in to it: the settings every MQTT client of picluster shares (the agent,
piclusterctl, the MPI launcher). Pure values, no I/O beyond reading a password file named in the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# The login of a process that is not the agent (piclusterctl, picluster-mpi-launch), from its environment.
from nodeagent.mqtt.env import (
    ENV_CA_FILE,
    ENV_CERT_FILE,
    ENV_KEY_FILE,
    ENV_PASSWORD,
    ENV_PASSWORD_FILE,
    ENV_USERNAME,
)

__all__ = [
    "ENV_CA_FILE",
    "ENV_CERT_FILE",
    "ENV_KEY_FILE",
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "ENV_USERNAME",
    "Broker",
    "Credentials",
]


@dataclass(frozen=True)
class Broker:
    """Where the broker is: parsed from ``mqtt://host:port``, ``mqtts://host``, ``host:port`` or ``host``."""

    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> Broker:
        text = url.strip()
        if "://" not in text:
            text = "mqtt://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"broker URL {url!r}: the port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r}: no host name")
        return cls(parts.hostname, port, tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        """The login of a process that is not the agent (piclusterctl, the MPI launcher), from ``ENV_*``.
        A password file wins over a password in the environment; an unreadable one is a ValueError naming it."""
        password = env.get(ENV_PASSWORD, "")
        if path := env.get(ENV_PASSWORD_FILE, ""):
            try:
                password = Path(path).read_text().rstrip("\n")
            except OSError as exc:
                raise ValueError(
                    f"cannot read the MQTT password file {path} ({ENV_PASSWORD_FILE}): {exc.strerror}"
                ) from None
        return cls(
            env.get(ENV_USERNAME, ""),
            password,
            env.get(ENV_CA_FILE, ""),
            env.get(ENV_CERT_FILE, ""),
            env.get(ENV_KEY_FILE, ""),
        )

    def to_env(self) -> dict[str, str]:
        """The same login for a child process (the agent hands its own to the MPI launcher)."""
        pairs = ((ENV_USERNAME, self.username), (ENV_PASSWORD, self.password), (ENV_CA_FILE, self.ca_file))
        pairs += ((ENV_CERT_FILE, self.cert_file), (ENV_KEY_FILE, self.key_file))
        return {k: v for k, v in pairs if v}
