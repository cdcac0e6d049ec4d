"""A throwaway certificate authority for TLS tests, made with the openssl command line (as docs/security.md does).

``ThrowawayCA(dir)`` writes ``ca.crt``/``ca.key``; ``server()`` a broker certificate for 127.0.0.1 and localhost;
``client(name)`` a client certificate. Keys are P-256 and certificates last two days. Every file is readable by
all (mosquitto drops to its own user and must still read them): test material only.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


class ThrowawayCA:
    def __init__(self, directory: Path, name: str = "picluster test CA") -> None:
        if shutil.which("openssl") is None:
            pytest.fail("the TLS tests need the openssl command: apt install openssl")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = directory / "ca.crt", directory / "ca.key"
        _openssl(
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", f"/CN={name}"),
        )
        self._readable(self.cert, self.key)

    def _issue(self, name: str, extensions: str) -> KeyPair:
        key, csr, cert = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt"
        ext = self.dir / f"{name}.ext"
        ext.write_text(extensions)
        _openssl(
            *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"),
        )
        _openssl(
            *("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial"),
            *("-out", str(cert), "-days", "2", "-extfile", str(ext)),
        )
        self._readable(key, cert)
        return KeyPair(cert, key)

    def server(self, name: str = "broker") -> KeyPair:
        """A broker certificate valid for 127.0.0.1 and localhost."""
        return self._issue(
            name,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )

    def client(self, name: str) -> KeyPair:
        """A client certificate whose common name is ``name``."""
        return self._issue(name, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")

    @staticmethod
    def _readable(*paths: Path) -> None:
        for path in paths:
            path.chmod(0o644)
