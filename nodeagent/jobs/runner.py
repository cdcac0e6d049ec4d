"""Run one job at a time: as the jobs user, in its own process group, with a timeout, progress and cancel.

The runner's thread reports through ``emit(kind, job_id, **fields)``; the agent turns those into events. A job id
whose directory already exists was seen before (a broker redelivery or a repeated submit) and never runs twice.
"""

from __future__ import annotations

import collections
import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeagent.config import JobsSection
from nodeagent.errors import JobFailed, JobRejected
from nodeagent.jobs.kind import JobContext, JobKind, Prepared
from nodeagent.jobs.kinds import KINDS
from nodeagent.protocol.messages import JobSpec

log = logging.getLogger("picluster.jobs")

Emit = Callable[..., None]
KILL_GRACE_S = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class DuplicateJob(JobRejected):
    """A job id this node has seen: a broker redelivery, answered with silence (the first copy is answered)."""


@dataclass
class _Running:
    spec: JobSpec
    ctx: JobContext
    kind: JobKind
    prepared: Prepared
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    cancel_reason: str = ""
    thread: threading.Thread | None = None
    frozen: bool = False
    annotations: Mapping[str, Any] | None = None  # merged into the result (e.g. forced past the health gate)


class Runner:
    """Executes jobs for one node. ``submit`` is called from the agent thread; the job runs on its own thread."""

    def __init__(
        self,
        cfg: JobsSection,
        work_dir: Path,
        *,
        cores: int,
        sim: bool,
        emit: Emit,
        kinds: Mapping[str, JobKind] | None = None,
        on_start: Callable[[], None] = lambda: None,
        on_end: Callable[[], None] = lambda: None,
        job_env: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.job_env = dict(job_env or {})  # given to every job (the MPI launcher finds its broker and job in it)
        self._on_start = on_start  # benchmark preparation (governor, fan boost) ...
        self._on_end = on_end  # ... and its undoing, whatever way the job ended
        self.work_dir = work_dir
        self.cores = cores
        self.sim = sim
        self._emit = emit
        self._kinds = dict(KINDS if kinds is None else kinds)
        self._lock = threading.Lock()
        self._current: _Running | None = None
        self._cpu_prev: tuple[float, float] | None = None  # (wall time, cpu seconds) of the job's group

    def reap_orphans(self) -> list[str]:
        """Kill processes of jobs a previous agent left running (it crashed or was killed) and return those job
        ids, so the agent can report them failed. A job process is one whose working directory is a job
        directory; under systemd the unit's cgroup usually got there first."""
        root = os.path.realpath(self.work_dir)
        jobs: set[str] = set()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if os.path.dirname(cwd) == root:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                jobs.add(os.path.basename(cwd))
                log.warning("event=orphan_killed pid=%s job=%s", entry.name, os.path.basename(cwd))
        return sorted(jobs)

    # --- queries ---------------------------------------------------------------------------------------------
    @property
    def current(self) -> str | None:
        with self._lock:
            return self._current.spec.id if self._current else None

    def capabilities(self) -> tuple[str, ...]:
        return tuple(k for k in self.cfg.kinds if k in self._kinds)

    # --- commands --------------------------------------------------------------------------------------------
    def submit(
        self,
        job: JobSpec,
        params: Mapping[str, Any],
        accepted: Callable[[dict[str, Any]], None],
        annotations: Mapping[str, Any] | None = None,
    ) -> None:
        """Accept and start ``job`` or raise JobRejected. ``accepted(plan)`` runs before the job's thread starts,
        so the accepted event always precedes started."""
        if job.kind not in self.cfg.kinds:
            allowed = ", ".join(self.cfg.kinds) or "none"
            raise JobRejected(f"job kind {job.kind!r} is not allowed on this node (jobs.kinds: {allowed})", "job.kind")
        kind = self._kinds.get(job.kind)
        if kind is None:
            raise JobRejected(f"job kind {job.kind!r} is not known to this agent version", "job.kind")
        job_dir = self.work_dir / job.id
        if job_dir.exists():  # before the busy check: a redelivery of the running job is a duplicate, not a clash
            raise DuplicateJob(f"job {job.id} was already received by this node; job ids run at most once", "job.id")
        with self._lock:
            if self._current is not None:
                raise JobRejected(f"node is busy with job {self._current.spec.id}; try again when it ends", "job")
        try:
            job_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise DuplicateJob(
                f"job {job.id} was already received by this node; job ids run at most once", "job.id"
            ) from None
        except OSError as exc:
            raise JobRejected(
                f"cannot create the job directory {job_dir}: {exc.strerror}; check agent.state_dir or jobs.work_dir",
                "job",
            ) from None
        user = self._job_user()
        ctx = JobContext(job.id, job_dir, self.cores, self.sim, self.cfg, run_as_root=os.geteuid() == 0 and not user)
        prepared = kind.prepare(params, ctx)
        for binary in dict.fromkeys((prepared.argv[0], *prepared.requires)):
            self._check_binary(binary)
        if user:
            _chown_tree(job_dir, user)
            _check_traversable(job_dir, user)
        running = _Running(job, ctx, kind, prepared, annotations=annotations)
        with self._lock:
            self._current = running
        accepted(dict(prepared.plan))
        running.thread = threading.Thread(target=self._run, args=(running, user), name=f"job-{job.id}", daemon=True)
        running.thread.start()
        self._prune()

    def cancel(self, job_id: str, reason: str = "cancelled by the operator") -> bool:
        """Stop the job if it is the one running; the runner thread then emits ``cancelled``."""
        with self._lock:
            running = self._current
            if running is None or running.spec.id != job_id:
                return False
            running.cancel_reason = reason
            started = running.proc is not None
        if started:
            self._kill(running)
        return True

    @property
    def frozen(self) -> bool:
        with self._lock:
            return bool(self._current and self._current.frozen)

    def freeze(self) -> bool:
        """SIGSTOP every process of the running job (the thermal guard's "hot"); True if one was frozen."""
        return self._set_frozen(True)

    def thaw(self) -> bool:
        """SIGCONT a frozen job; True if one was thawed."""
        return self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> bool:
        with self._lock:
            running = self._current
            if running is None or running.proc is None or running.frozen == frozen:
                return False
            running.frozen = frozen
        _signal_session(running.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop any running job (agent exit): it ends as cancelled, never silently."""
        with self._lock:
            running = self._current
        if running is not None:
            running.cancel_reason = "the agent is stopping"
            self._kill(running)
            if running.thread is not None:
                running.thread.join(timeout_s)

    def busy_cores(self, now: float) -> float:
        """How many cores the running job kept busy since the last call (CPU time of its session)."""
        with self._lock:
            running = self._current
        proc = running.proc if running else None
        if proc is None:
            self._cpu_prev = None
            return 0.0
        cpu = _session_cpu_seconds(proc.pid)
        prev, self._cpu_prev = self._cpu_prev, (now, cpu)
        if prev is None or now <= prev[0]:
            return 0.0
        return max(0.0, (cpu - prev[1]) / (now - prev[0]))

    # --- the job thread ----------------------------------------------------------------------------------------
    def _run(self, running: _Running, user: str) -> None:
        spec, ctx = running.spec, running.ctx
        out_path = ctx.work_dir / "output.log"
        tail: collections.deque[str] = collections.deque(maxlen=200)
        kept = 0
        limit = self.cfg.max_output_kb * 1024
        try:
            self._on_start()
            env = {**os.environ, **self.job_env, **running.prepared.env}
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(
                    running.prepared.argv,
                    cwd=ctx.work_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own session: cancel, kill and CPU accounting reach every rank
                    **_user_kwargs(user),
                )
                with self._lock:
                    running.proc = proc
                    cancelled_early = bool(running.cancel_reason)
                if cancelled_early:  # cancel() came before the process existed
                    self._kill(running)
                running.started = time.monotonic()
                self._emit("started", spec.id, data={"argv": list(running.prepared.argv), "pid": running.proc.pid})
                reader = threading.Thread(target=_pump, args=(proc, out, tail, limit), daemon=True)
                reader.start()
                self._watch(running, tail)
                reader.join(5)
            kept = out_path.stat().st_size
            output = out_path.read_text(errors="replace")
            if running.cancel_reason:
                self._emit("cancelled", spec.id, reason=running.cancel_reason)
                return
            result = running.kind.result(ctx, running.prepared, output, proc.returncode)
            result.setdefault("elapsed_s", round(time.monotonic() - running.started, 3))
            result.update(running.annotations or {})
            self._emit("finished", spec.id, result=result)
        except JobFailed as exc:
            self._emit("failed", spec.id, reason=str(exc))
        except OSError as exc:
            self._emit("failed", spec.id, reason=f"could not start {running.prepared.argv[0]}: {exc.strerror or exc}")
        except Exception as exc:  # a bug in a kind must still end the job, never leave it hanging
            log.exception("event=job_crash job=%s", spec.id)
            self._emit("failed", spec.id, reason=f"internal error in the {spec.kind} runner: {exc!r}")
        finally:
            try:
                self._on_end()
            except Exception:  # undoing the preparation must never hide the job's end
                log.exception("event=job_end_hook_failed job=%s", spec.id)
            log.info("event=job_end job=%s output_bytes=%d", spec.id, kept)
            with self._lock:
                self._current = None
            self._cpu_prev = None

    def _watch(self, running: _Running, tail: collections.deque[str]) -> None:
        """Wait for the process, emitting progress and enforcing the timeout."""
        assert running.proc is not None
        last: tuple[float | None, str] | None = None
        deadline = running.started + running.spec.timeout_s
        while True:
            try:
                running.proc.wait(timeout=self.cfg.progress_interval_s)
                return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline and not running.cancel_reason:
                self._kill(running)
                running.proc.wait()
                raise JobFailed(
                    f"timed out after {running.spec.timeout_s:g} s; raise --timeout or make the problem smaller"
                )
            progress = running.kind.progress(running.ctx, "".join(tail))
            if progress is not None and (progress.fraction, progress.phase) != last:
                last = (progress.fraction, progress.phase)
                self._emit(
                    "progress",
                    running.spec.id,
                    progress=progress.fraction,
                    phase=progress.phase,
                    data={"elapsed_s": round(time.monotonic() - running.started, 1)},
                )

    # --- helpers ---------------------------------------------------------------------------------------------
    def _kill(self, running: _Running) -> None:
        """SIGTERM the job's session (mpirun forwards it to the ranks), SIGKILL whatever is left after a grace."""
        proc = running.proc
        if proc is None or proc.poll() is not None:
            return
        _signal_session(proc.pid, signal.SIGTERM)
        _signal_session(proc.pid, signal.SIGCONT)  # a frozen job must run to see its SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_GRACE_S)
        _signal_session(proc.pid, signal.SIGKILL)
        # A killed process is gone only once the kernel has finished with it: report the job ended after that.
        deadline = time.monotonic() + KILL_GRACE_S
        while _session_procs(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _job_user(self) -> str:
        """The user jobs run as: the configured one when we are root; never root outside --sim."""
        if os.geteuid() != 0:
            return ""
        try:
            pwd.getpwnam(self.cfg.user)
            return self.cfg.user
        except KeyError:
            if self.sim:
                log.warning(
                    "event=job_as_root reason='jobs.user %s does not exist; --sim mode runs jobs as root'",
                    self.cfg.user,
                )
                return ""
            raise JobRejected(
                f"jobs.user {self.cfg.user!r} does not exist and jobs never run as root; create it "
                f"(adduser --system {self.cfg.user}) or set jobs.user",
                "jobs.user",
            ) from None

    def _check_binary(self, name: str) -> None:
        if shutil.which(name) is None:
            raise JobRejected(
                f"{name} not found on this node; install it (apt install openmpi-bin hpcc "
                "libopenblas0) or set its path in [jobs]",
                "job.kind",
            )

    def _prune(self) -> None:
        """Keep the newest ``keep_jobs`` job directories; the rest are old results already published."""
        try:
            dirs = sorted((p for p in self.work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for old in dirs[: max(0, len(dirs) - self.cfg.keep_jobs)]:
            shutil.rmtree(old, ignore_errors=True)


def _pump(proc: subprocess.Popen[bytes], out: Any, tail: collections.deque[str], limit: int) -> None:
    """Copy the job's output to output.log (up to ``limit`` bytes) and keep the last lines for progress."""
    written = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.decode(errors="replace"))
        if written < limit:
            out.write(line[: limit - written])
            out.flush()
            written += len(line)


def _user_kwargs(user: str) -> dict[str, Any]:
    if not user:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _check_traversable(path: Path, user: str) -> None:
    """The jobs user must be able to enter its job directory, or MPI fails with a cryptic cwd error."""
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise JobRejected(
                f"jobs user {user!r} cannot enter {parent}: make it traversable (chmod o+x {parent}) "
                "or move agent.state_dir",
                "jobs.user",
            )


def _chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def _session_procs(sid: int) -> list[tuple[int, int]]:
    """(pid, utime+stime ticks) of every live process in session ``sid``, in one pass over /proc.

    Sessions, not process groups: Open MPI puts each rank in a process group of its own, but every process the
    job starts stays in the session the runner created for it.
    """
    procs = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != b"Z":  # field 6 (session) after the ")" of comm; zombies are gone
            procs.append((int(entry.name), int(fields[11]) + int(fields[12])))  # utime, stime
    return procs


def _signal_session(sid: int, sig: int) -> None:
    for pid, _ in _session_procs(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _session_cpu_seconds(sid: int) -> float:
    return sum(ticks for _, ticks in _session_procs(sid)) / CLK_TCK
