"""[security]: which commands a node obeys (docs/security.md, "Operator signing keys")."""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.errors import ConfigError

MAX_NONCES = 1_000_000


@dataclass(frozen=True)
class SecurityConfig:
    """[security]: signed commands."""

    # Obey only commands signed by an operator key (MPI launches: by the job's leader). Unset: true, except on a
    # simulated node (--sim), where it is false so that demos need no keys.
    require_signed: bool | None = None
    operator_keys_dir: str = "/etc/picluster/operators.d"  # NAME.pub files, one key each (NAME: the key's name)
    max_skew_s: float = 60.0  # a command signed longer ago (or further ahead) than this is refused as stale
    nonce_cache_max: int = 10000  # nonces remembered per key (each for 2 x max_skew_s); beyond, commands wait
    node_key_file: str = ""  # this node's own key (it signs its MPI launches); empty: <state_dir>/node.key

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_skew_s <= 3600.0:
            raise ConfigError(f"security.max_skew_s: expected seconds from 1 to 3600, got {self.max_skew_s!r}")
        if not 1 <= self.nonce_cache_max <= MAX_NONCES:
            got = self.nonce_cache_max
            raise ConfigError(f"security.nonce_cache_max: expected a whole number from 1 to {MAX_NONCES}, got {got!r}")
        if not self.operator_keys_dir:
            raise ConfigError("security.operator_keys_dir: expected a directory, got an empty string")

    def signed_only(self, sim: bool) -> bool:
        """Whether this node refuses unsigned commands: ``require_signed``, or when unset, not on a simulated node."""
        return (not sim) if self.require_signed is None else self.require_signed
