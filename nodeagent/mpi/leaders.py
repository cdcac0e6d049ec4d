"""The cluster jobs this node leads, as far as its MPI launcher may act for them: the nodes of each and its token.

The leader's kind (``cluster_kind``) registers a job when it prepares it and hands its launcher the token and
the agent's socket (``launch_socket``) in the job's environment; the relay (``relay``) accepts a launch only for
a registered job that is running, from a process of that job, with its token, for one of its nodes. The entry
goes when the job is neither running nor queued any more: its token is then worth nothing.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LeaderJob:
    job_id: str
    hosts: tuple[str, ...]  # the leader first
    token: str
    launched: set[str] = field(default_factory=set)  # members whose daemon was asked for already


class Leaders:
    """This node's leader jobs. ``opener()`` makes the agent listen for their launchers and says where: it is
    called once, when the node first leads a job (most nodes never need the socket and its thread)."""

    def __init__(self, opener: Callable[[], Path | None] = lambda: None) -> None:
        self.jobs: dict[str, LeaderJob] = {}
        self.opener = opener
        self._path: Path | None = None

    @property
    def socket_path(self) -> Path | None:
        """Where this node's launchers reach its agent (None: it could not listen; the log said why)."""
        if self._path is None:
            self._path = self.opener()
        return self._path

    def add(self, job_id: str, hosts: list[str]) -> str:
        """Register a leader job; its token for the job's environment."""
        token = secrets.token_urlsafe(24)
        self.jobs[job_id] = LeaderJob(job_id, tuple(hosts), token)
        return token

    def get(self, job_id: str, token: str) -> LeaderJob | None:
        """The job, when ``token`` is its own (compared in constant time)."""
        job = self.jobs.get(job_id)
        return job if job is not None and hmac.compare_digest(job.token.encode(), token.encode()) else None

    def retire(self, live: set[str]) -> list[str]:
        """Forget the jobs not in ``live`` (running or queued); their ids."""
        gone = [j for j in self.jobs if j not in live]
        for job_id in gone:
            del self.jobs[job_id]
        return gone
