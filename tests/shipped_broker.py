"""Mosquitto running the shipped broker config (systemd/mosquitto/picluster.conf and picluster.acl) as is: only the
two ports, the file paths and the log differ. Its TLS listener uses a throwaway CA (tests/tlsca.py); every login's
password is ``pw-<user>``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.localcluster import free_port, wait_port
from tests.conftest import REPO, Mosquitto
from tests.tlsca import ThrowawayCA

EXAMPLE = REPO / "systemd" / "mosquitto"
SHIPPED_PATHS = {
    "/etc/mosquitto/ca_certificates/picluster-ca.crt": "ca.crt",
    "/etc/mosquitto/certs/picluster-broker.crt": "broker.crt",
    "/etc/mosquitto/certs/picluster-broker.key": "broker.key",
}


@dataclass
class ShippedBroker(Mosquitto):
    """The shipped config's broker. ``url`` names its plain (loopback) listener, ``tls().url`` the TLS one."""

    tls_port: int = field(default_factory=free_port)
    use_tls: bool = False
    ca: ThrowawayCA | None = None

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}" if self.use_tls else f"mqtt://127.0.0.1:{self.port}"

    def tls(self) -> ShippedBroker:
        """The same broker, addressed through its TLS listener (stop the original, not this view)."""
        return dataclasses.replace(self, use_tls=True)

    @property
    def ca_file(self) -> str:
        assert self.ca is not None
        return str(self.ca.cert)

    def login(self, user: str) -> str:
        """An agent config's [mqtt] table for ``user`` over this view's listener."""
        ca = f'ca_file = "{self.ca_file}"\n' if self.use_tls else ""
        return f'[mqtt]\nusername = "{user}"\npassword = "pw-{user}"\n{ca}'


def shipped_conf(text: str, work: Path, plain: int, tls: int) -> str:
    """The shipped picluster.conf with this test's ports and files."""
    for old, new in (
        ("\nlistener 1883 127.0.0.1\n", f"\nlistener {plain} 127.0.0.1\n"),
        ("\nlistener 8883\n", f"\nlistener {tls} 127.0.0.1\n"),
    ):
        assert old in text, f"the shipped config no longer has {old.strip()!r}"
        text = text.replace(old, new)
    for path, name in SHIPPED_PATHS.items():
        assert path in text, f"the shipped config no longer names {path}"
        text = text.replace(path, str(work / name))
    text = text.replace("/etc/mosquitto/picluster.passwd", str(work / "picluster.passwd"))
    return text.replace("/etc/mosquitto/picluster.acl", str(EXAMPLE / "picluster.acl"))


@contextmanager
def shipped_broker(
    users: tuple[str, ...] = ("n1", "n2", "operator"), *, require_certificate: bool = False
) -> Iterator[ShippedBroker]:
    """The shipped broker; ``require_certificate`` turns on the config's commented-out client certificate demand."""
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it (apt install mosquitto)")
    work = Path(tempfile.mkdtemp(prefix="picluster-acl-"))
    work.chmod(0o1777)  # mosquitto drops to its own user and must still read these files and write its log
    ca = ThrowawayCA(work)
    ca.server("broker")
    mosq = ShippedBroker(work, ca=ca)
    conf = shipped_conf((EXAMPLE / "picluster.conf").read_text(), work, mosq.port, mosq.tls_port)
    if require_certificate:
        assert "\n#require_certificate true\n" in conf, "the shipped config no longer offers require_certificate"
        conf = conf.replace("\n#require_certificate true\n", "\nrequire_certificate true\n")
    (work / "mosquitto.conf").write_text(conf + f"persistence false\nlog_dest file {work / 'mosquitto.log'}\n")
    for i, user in enumerate(users):
        flags = ["-c"] if i == 0 else []
        passwd = ["mosquitto_passwd", *flags, "-b", str(work / "picluster.passwd"), user, f"pw-{user}"]
        subprocess.run(passwd, check=True)
    (work / "picluster.passwd").chmod(0o644)
    mosq.proc = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    try:
        wait_port(mosq.port)
        wait_port(mosq.tls_port)
        yield mosq
    finally:
        mosq.stop()
        shutil.rmtree(work, ignore_errors=True)
