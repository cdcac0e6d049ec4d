"""[prometheus]: where the node's metrics go (docs/prometheus.md)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from nodeagent.errors import ConfigError


@dataclass(frozen=True)
class PrometheusConfig:
    """[prometheus]: node_exporter's textfile collector and an optional /metrics endpoint of the agent's own."""

    textfile: str = "/var/lib/prometheus/node-exporter/picluster.prom"  # empty: no textfile
    textfile_interval_s: float = 15.0  # a rewrite at most this often (node_exporter reads it on every scrape)
    listen: str = ""  # host:port for /metrics, e.g. "0.0.0.0:9101"; empty: no endpoint

    def __post_init__(self) -> None:
        if self.textfile and not self.textfile.endswith(".prom"):
            raise ConfigError(
                f"prometheus.textfile: expected a path ending in .prom (node_exporter reads only those), "
                f"got {self.textfile!r}"
            )
        if self.textfile_interval_s <= 0:
            raise ConfigError(
                f"prometheus.textfile_interval_s: expected a number above 0, got {self.textfile_interval_s!r}"
            )
        if self.listen and parse_listen(self.listen) is None:
            raise ConfigError(f"prometheus.listen: expected host:port such as 0.0.0.0:9101, got {self.listen!r}")

    def for_sim(self, state_dir: str | Path) -> PrometheusConfig:
        """A simulated node is not this machine's hardware: the default textfile moves out of node_exporter's
        directory into the node's state directory."""
        if self.textfile != PrometheusConfig().textfile:
            return self
        with contextlib.suppress(OSError):
            Path(state_dir).mkdir(parents=True, exist_ok=True)
        return replace(self, textfile=str(Path(state_dir) / "picluster.prom"))


def parse_listen(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) -> (host, port), or None when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
