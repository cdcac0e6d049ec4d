"""An operator signing key for tests: the private key file piclusterctl signs with (``PICLUSTER_KEY``), and the
operators.d directory agents trust it from (``[security]``), both under the test's temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent.security.keys import SigningKey


@dataclass(frozen=True)
class OperatorKey:
    key: SigningKey
    key_file: Path  # the private key, mode 0600
    keys_dir: Path  # an operators.d holding its .pub

    def config(self, *, require_signed: bool = True) -> str:
        """An agent config's [security] table that trusts this key."""
        flag = "true" if require_signed else "false"
        return f'[security]\nrequire_signed = {flag}\noperator_keys_dir = "{self.keys_dir}"\n'

    @property
    def env(self) -> dict[str, str]:
        return {"PICLUSTER_KEY": str(self.key_file)}


def make_operator_key(where: Path, name: str = "alice") -> OperatorKey:
    """A new key in ``where``: ``NAME.key`` and ``operators.d/NAME.pub``."""
    where.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate(name)
    key_file = where / f"{name}.key"
    key.save(key_file)
    keys_dir = where / "operators.d"
    keys_dir.mkdir(mode=0o755, exist_ok=True)
    (keys_dir / f"{name}.pub").write_text(key.public.line(f"{name}@test") + "\n")
    (keys_dir / f"{name}.pub").chmod(0o644)
    return OperatorKey(key, key_file, keys_dir)


@pytest.fixture
def operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OperatorKey]:
    """An operator key that this test's piclusterctl processes and Watcher sessions sign with."""
    key = make_operator_key(tmp_path / "operator")
    monkeypatch.setenv("PICLUSTER_KEY", str(key.key_file))
    yield key
