"""Glue between the agent's tick and the two Prometheus outputs: the textfile (rate-limited) and ``/metrics``.

A failing write is logged once with the fix and retried later; metrics never stop the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from nodeagent.metrics.config import PrometheusConfig, parse_listen
from nodeagent.metrics.http import MetricsServer
from nodeagent.metrics.textfile import node_families, render, write_atomic
from nodeagent.protocol import NodeFacts, Telemetry

log = logging.getLogger("picluster.metrics")


class MetricsExporter:
    """Renders each tick's telemetry for Prometheus where ``[prometheus]`` asks for it."""

    def __init__(self, cfg: PrometheusConfig, cluster: str) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self._written_at = float("-inf")
        self._write_failed = False
        self.server: MetricsServer | None = None
        if cfg.listen:
            host, port = parse_listen(cfg.listen) or ("", 0)
            try:
                self.server = MetricsServer(host, port)
                log.info("event=metrics_listening address=%s:%d", host, self.server.port)
            except OSError as exc:
                log.error("event=metrics_listen_failed address=%s error=%r fix='set prometheus.listen to a free '"
                          "'address, or empty'", cfg.listen, str(exc))  # fmt: skip

    @property
    def active(self) -> bool:
        return bool(self.cfg.textfile) or self.server is not None

    def tick(self, t: Telemetry, facts: Callable[[], NodeFacts], last_hpl_gflops: float | None, now: float) -> None:
        """``now`` is a steady clock; ``facts`` gives the node's facts. Renders only when an output wants it."""
        write_due = bool(self.cfg.textfile) and now - self._written_at >= self.cfg.textfile_interval_s
        if not write_due and self.server is None:
            return
        text = render(node_families(t, facts(), self.cluster, last_hpl_gflops))
        if self.server is not None:
            self.server.update(text)
        if write_due:
            self._written_at = now
            self._write(Path(self.cfg.textfile), text)

    def _write(self, path: Path, text: str) -> None:
        try:
            write_atomic(path, text)
        except OSError as exc:
            if not self._write_failed:
                log.warning(
                    "event=textfile_write_failed path=%s error=%r fix='create the directory and let the agent "
                    'write it (ReadWritePaths in the unit), or set prometheus.textfile = ""\'',
                    path,
                    exc.strerror or str(exc),
                )
            self._write_failed = True
            return
        if self._write_failed:
            log.info("event=textfile_written_again path=%s", path)
        self._write_failed = False

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
