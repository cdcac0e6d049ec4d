"""A real Home Assistant for tests: built once into a cached venv (scripts/ha-venv.sh), started per test module
with a throwaway config directory whose MQTT integration points at the test broker, stopped by its PID.

How the throwaway instance is prepared, without the UI:
- ``configuration.yaml`` loads only ``http`` (loopback, a free port), ``api`` and ``logger``; HA adds its
  default integrations itself (they need no configuration and no network).
- the MQTT integration is a config entry, so ``.storage/core.config_entries`` gets one (broker, port,
  discovery on with the default prefix) in the storage format of this HA version;
- an admin user with a long-lived refresh token goes into ``.storage/auth``; the test signs its own access
  token with that token's key (HS256 JWT, as HA's ``async_create_access_token`` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HA_VERSION = os.environ.get("PICLUSTER_HA_VERSION", "2025.4.4")
START_TIMEOUT_S = 240.0  # a cold start on a loaded 2-core machine compiles translations and the frontend index


def ha_python() -> str:
    """The cached HA venv's python, building it first if needed. Fails loudly: never a skip."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "ha-venv.sh"), HA_VERSION], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"cannot build the Home Assistant {HA_VERSION} venv (scripts/ha-venv.sh, exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout.strip().splitlines()[-1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], key: str) -> str:
    """An HS256 JWT: what HA's own ``jwt.encode(..., algorithm="HS256")`` makes for an access token."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def _store(key: str, data: dict[str, Any], version: int = 1, minor_version: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor_version, "key": key, "data": data}, indent=1)


def write_config(config_dir: Path, *, http_port: int, broker_port: int) -> str:
    """The throwaway configuration; returns the access token for the REST API."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True)
    (config_dir / "configuration.yaml").write_text(
        "homeassistant:\n  name: picluster-test\n  unit_system: metric\n  time_zone: UTC\n"
        "  latitude: 0\n  longitude: 0\n  elevation: 0\n  currency: EUR\n  country: DE\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {http_port}\n"
        "api:\n"
        "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: debug\n"
    )
    now = "2025-01-01T00:00:00+00:00"
    entry = {
        "created_at": now,
        "modified_at": now,
        "data": {"broker": "127.0.0.1", "port": broker_port},
        "options": {"discovery": True, "discovery_prefix": "homeassistant"},
        "discovery_keys": {},
        "disabled_by": None,
        "domain": "mqtt",
        "entry_id": uuid.uuid4().hex,
        "minor_version": 2,
        "version": 1,
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": "test broker",
        "unique_id": None,
    }
    (storage / "core.config_entries").write_text(_store("core.config_entries", {"entries": [entry]}, 1, 5))
    user_id, token_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
    auth = {
        "users": [
            {
                "id": user_id,
                "group_ids": ["system-admin"],
                "is_owner": True,
                "is_active": True,
                "name": "picluster test",
                "system_generated": False,
                "local_only": False,
            }
        ],
        "groups": [{"id": "system-admin", "name": "Administrators"}],
        "credentials": [],
        "refresh_tokens": [
            {
                "id": token_id,
                "user_id": user_id,
                "client_id": None,
                "client_name": "picluster test",
                "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": now,
                "access_token_expiration": 10 * 365 * 86400,
                "token": secrets.token_hex(64),
                "jwt_key": jwt_key,
                "last_used_at": None,
                "last_used_ip": None,
                "expire_at": None,
                "credential_id": None,
                "version": HA_VERSION,
            }
        ],
    }
    (storage / "auth").write_text(_store("auth", auth))
    (storage / "onboarding").write_text(
        _store("onboarding", {"done": ["user", "core_config", "analytics", "integration"]}, 4)
    )
    iat = int(time.time()) - 60
    return sign_jwt({"iss": token_id, "iat": iat, "exp": iat + 86400}, jwt_key)


@dataclass
class HomeAssistant:
    """One running HA: its REST API and its log."""

    config_dir: Path
    port: int
    token: str
    proc: subprocess.Popen[bytes]
    started_s: float = 0.0

    @property
    def log_file(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def log(self) -> str:
        """Everything HA logged in this config directory: earlier runs' rotated files too, and its stdout."""
        files = [self.config_dir / n for n in ("home-assistant.log.1", "home-assistant.log", "stdout.log")]
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.api("GET", "states")}

    def template(self, text: str) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/template",
            data=json.dumps({"template": text}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read().decode()

    def wait_running(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the API answers and HA's state is RUNNING; an early exit or a timeout fails with the log."""
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if self.api("GET", "config").get("state") == "RUNNING":
                    self.started_s = time.monotonic() - start
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Home Assistant did not start within {timeout_s:g} s:\n{self.log()[-4000:]}")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_home_assistant(config_dir: Path, *, http_port: int, broker_port: int, fresh: bool = True) -> HomeAssistant:
    """Start HA on a new throwaway config (``fresh``) or again on the one a previous start wrote."""
    python = ha_python()
    token_file = config_dir / ".picluster-test-token"
    if fresh:
        token_file_text = write_config(config_dir, http_port=http_port, broker_port=broker_port)
        token_file.write_text(token_file_text)
    token = token_file.read_text()
    out = open(config_dir / "stdout.log", "ab")  # noqa: SIM115 - the process owns it until it exits
    proc = subprocess.Popen(
        [python, "-m", "homeassistant", "--config", str(config_dir), "--skip-pip", "--log-no-color"],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=config_dir,
    )
    return HomeAssistant(config_dir, http_port, token, proc)
