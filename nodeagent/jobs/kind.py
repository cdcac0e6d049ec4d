"""What a job kind provides to the runner: validate and prepare, report progress, read the result.

A kind never starts processes itself and never sees a shell: it returns an argv list, and the runner executes
it as the jobs user, in its own process group, with a timeout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nodeagent.config import JobsSection
from nodeagent.jobs.files import read_job_bytes
from nodeagent.protocol.messages import Scalar


@dataclass(frozen=True)
class JobContext:
    """Everything a kind may use: its own work directory, the node's size, the jobs config."""

    job_id: str
    work_dir: Path
    cores: int
    sim: bool
    cfg: JobsSection
    owner_uid: int = -1  # who owns the files the job writes: the jobs user (-1: this process's own user)
    started: float = 0.0  # time.monotonic() when the process started (0 before)
    machine_output: str = ""  # once the job ended: what it wrote to ``Prepared.stdout_name`` (the runner reads it)

    def read(self, name: str) -> str:
        """A file the job wrote in its directory ("" when there is none), read without following links and only
        when the jobs user owns it (nodeagent/jobs/files.py), at most ``jobs.max_output_kb``. Raises OSError
        (``UnsafeFile`` for a link or another owner's file) naming the file."""
        return self.read_bytes(name).decode(errors="replace")

    def read_bytes(self, name: str, offset: int = 0) -> bytes:
        """Like ``read``, as bytes from ``offset`` on: a log the job is still writing, read a piece at a time."""
        owner = self.owner_uid if self.owner_uid >= 0 else os.geteuid()
        data = read_job_bytes(self.work_dir, name, owner=owner, limit=self.cfg.max_output_kb * 1024, offset=offset)
        return data or b""


@dataclass(frozen=True)
class Prepared:
    """A job ready to run: the argv (no shell), extra environment, and what to show the operator."""

    argv: tuple[str, ...]
    requires: tuple[str, ...] = ()  # binaries that must exist (argv[0] is always checked)
    env: Mapping[str, str] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    heavy: bool = True  # heavy jobs hold the node: one at a time
    diagnostic: bool = False  # a light template that may look at a node the thermal guard holds off
    stdout_name: str = ""  # set: stdout goes to this file in the job directory (machine output), stderr to the log
    timeout_s: float | None = None  # set: the most this job may run, whatever the request asks
    install_hint: str = "apt install openmpi-bin hpcc libopenblas0"  # how to get a missing binary


@dataclass(frozen=True)
class Progress:
    fraction: float | None
    phase: str


class JobKind(Protocol):
    """Interface of one job kind (hpl, stress, ...)."""

    name: str

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        """Validate ``params`` (raise JobRejected naming the field) and write input files into ctx.work_dir."""
        ...

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        """Where the running job is, from its files or recent output; None when unknown. Must be cheap."""
        ...

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        """The result of a finished process (``prepared`` is what ``prepare`` returned); raise JobFailed saying
        what went wrong and how to fix it."""
        ...


class ServingKind(JobKind, Protocol):
    """A kind whose job serves others until stopped (a cluster worker). The runner asks ``ready`` every progress
    interval until it answers, then emits one ``ready`` event carrying the answer (e.g. the worker's address)."""

    def ready(self, ctx: JobContext, prepared: Prepared) -> dict[str, Any] | None: ...
