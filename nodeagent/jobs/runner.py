"""Run jobs: as the jobs user, in their own session (and a systemd scope where systemd runs the machine), with
a timeout, progress, cancel, a cap on the output kept and rate-limited log events.

One heavy job at a time: another heavy job is refused, or queued (bounded, ``jobs.queue_max``) when its request
asks for it; light jobs (templates with ``heavy = false``) run beside it, at most ``jobs.light_max`` at once. A job
is admitted (``admit``: the node's health gate and power budget) after its kind has prepared it, judged by the
kind's own ``heavy`` and ``diagnostic``. Jobs never run as root (``jobs.user`` must exist, in ``--sim`` too), and
the files the agent reads back from a job's directory are opened without following links (``jobs/files.py``).
The runner's threads report through ``emit(kind, job_id, **fields)``; the agent turns those into events. A job id
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
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from nodeagent.config import JobsSection
from nodeagent.errors import JobFailed, JobRejected, echo
from nodeagent.jobs.environ import job_environ
from nodeagent.jobs.files import AgentFile
from nodeagent.jobs.kind import JobContext, JobKind, Prepared
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.kinds.template import TemplateKind
from nodeagent.jobs.limits import check_light
from nodeagent.jobs.loglimit import LogLimiter
from nodeagent.jobs.output import OutputPump
from nodeagent.jobs.scope import scope_argv, systemd_running
from nodeagent.protocol.messages import JobSpec

log = logging.getLogger("picluster.jobs")

Emit = Callable[..., None]


class Hooks(Protocol):
    """What the node does around a job (nodeagent/node/commands.py ``JobHooks``)."""

    def admit(self, heavy: bool, force: bool, diagnostic: bool = False) -> Mapping[str, Any]:
        """After the kind's ``prepare``: refuse (raise JobRejected) or admit; returns what a forced start records
        ({} when nothing was overridden). ``diagnostic``: a light template marked so (it may look at a node the
        thermal guard holds off)."""
        ...

    def prepare(self) -> None:
        """Before a heavy job starts (benchmark preparation: governor, fan boost)."""
        ...

    def restore(self) -> None:
        """After a heavy job ended, whichever way."""
        ...


class NoHooks:
    """Admit everything, prepare nothing (a runner without a node around it: tests)."""

    def admit(self, heavy: bool, force: bool, diagnostic: bool = False) -> Mapping[str, Any]:
        return {}

    def prepare(self) -> None:
        pass

    def restore(self) -> None:
        pass


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
    frozen_since: float = 0.0  # monotonic time of the last freeze
    frozen_s: float = 0.0  # time spent frozen before that: the timeout does not count it
    annotations: Mapping[str, Any] = field(default_factory=dict)  # merged into the result (forced past admission)
    user: str = ""
    progress: tuple[float | None, str] = (None, "")  # the last progress event's fraction and phase
    output: AgentFile | None = None  # output.log, made by the agent before the job ran; read through this descriptor
    machine: AgentFile | None = None  # the kind's stdout file (``Prepared.stdout_name``), likewise

    @property
    def heavy(self) -> bool:
        return self.prepared.heavy

    def close_files(self) -> None:
        for f in (self.output, self.machine):
            if f is not None:
                f.close()

    def paused_s(self, now: float) -> float:
        """Seconds the thermal guard has kept this job frozen: the node's doing, so not the job's time."""
        return self.frozen_s + (now - self.frozen_since if self.frozen else 0.0)


OUTPUT_LOG = "output.log"  # the job's output as kept (the first jobs.max_output_kb), in its directory
TMP_PREFIX = "picluster-"
TMP_MARK = ".tmpdir"  # <work_dir>/<job id>.tmpdir: where that job's private TMPDIR is


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
        hooks: Hooks | None = None,
        job_env: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.hooks: Hooks = hooks or NoHooks()  # admission, and the node's preparation and its undoing
        self.job_env = dict(job_env or {})  # given to every job
        self.work_dir = work_dir
        self.cores = cores
        self.sim = sim
        self._emit = emit
        self._kinds = dict(KINDS if kinds is None else kinds)
        self._lock = threading.Lock()
        self._jobs: dict[str, _Running] = {}  # running now (at most one heavy)
        self._queue: collections.deque[_Running] = collections.deque()  # heavy jobs waiting, in order
        self.systemd = systemd_running()
        self._cpu_prev: tuple[float, float] | None = None  # (wall time, cpu seconds) of the job's group
        self._warned_root = False

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
        for mark in self.work_dir.glob(f"*{TMP_MARK}"):  # temporary directories of those jobs
            _remove_tmp(mark)
        return sorted(jobs)

    # --- queries ---------------------------------------------------------------------------------------------
    @property
    def current(self) -> str | None:
        """The running heavy job (else any running job): what telemetry shows and the guard acts on."""
        with self._lock:
            heavy = [r for r in self._jobs.values() if r.heavy] or list(self._jobs.values())
            return heavy[0].spec.id if heavy else None

    @property
    def running(self) -> tuple[str, ...]:
        """Every running job, heavy and light."""
        with self._lock:
            return tuple(self._jobs)

    def progress_of(self, job_id: str) -> tuple[float | None, str]:
        """The running job's last reported (fraction, phase); (None, "") before its first or when not running."""
        with self._lock:
            running = self._jobs.get(job_id)
            return running.progress if running is not None else (None, "")

    def session_of(self, job_id: str) -> int | None:
        """The session of a running job's processes (the pid of the one it started), None before or after."""
        with self._lock:
            running = self._jobs.get(job_id)
            return running.proc.pid if running is not None and running.proc is not None else None

    @property
    def queued(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(r.spec.id for r in self._queue)

    def reconfigure(self, cfg: JobsSection, work_dir: Path) -> bool:
        """A reloaded [jobs]; True when the kinds this node accepts changed (its facts say which)."""
        kinds = self.capabilities()
        self.cfg, self.work_dir = cfg, work_dir
        return self.capabilities() != kinds

    def capabilities(self) -> tuple[str, ...]:
        """The kinds this node accepts: allowed built-in kinds, then the configured templates."""
        builtin = tuple(k for k in self.cfg.kinds if k in self._kinds)
        return builtin + tuple(t.name for t in self.cfg.template if t.name not in builtin)

    def _kind_for(self, name: str) -> JobKind:
        for tpl in self.cfg.template:
            if tpl.name == name:
                return TemplateKind(tpl)
        if name not in self.cfg.kinds:
            kinds = ", ".join(self.cfg.kinds) or "none"
            templates = ", ".join(t.name for t in self.cfg.template)
            also = f"; templates: {templates}" if templates else ""
            raise JobRejected(
                f"job kind {echo(name)} is not allowed on this node (jobs.kinds: {kinds}{also})",
                "job.kind",
            )
        kind = self._kinds.get(name)
        if kind is None:
            raise JobRejected(f"job kind {echo(name)} is not known to this agent version", "job.kind")
        return kind

    # --- commands --------------------------------------------------------------------------------------------
    def submit(
        self,
        job: JobSpec,
        params: Mapping[str, Any],
        accepted: Callable[[dict[str, Any]], None],
    ) -> None:
        """Prepare, admit and start (or queue) ``job``, or raise JobRejected. ``accepted(data)`` gets the accepted
        event's data (the plan, and what ``--force`` overrode) before the job's thread starts, so the accepted
        event always precedes queued and started."""
        kind = self._kind_for(job.kind)
        job_dir = self.work_dir / job.id
        if job_dir.exists():  # before the busy check: a redelivery of the running job is a duplicate, not a clash
            raise DuplicateJob(f"job {job.id} was already received by this node; job ids run at most once", "job.id")
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
        running: _Running | None = None
        try:
            running = self._prepare(job, kind, job_dir, params)
            diagnostic = running.prepared.diagnostic
            running.annotations = dict(self.hooks.admit(running.heavy, job.force, diagnostic))
            with self._lock:
                position = self._admit(running)
        except BaseException:
            # Refused: nothing of it stays here (the agent's spool remembers the id: a copy is a duplicate).
            if running is not None:
                running.close_files()
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        accepted({"plan": dict(running.prepared.plan), **running.annotations})
        if position:
            self._emit("queued", job.id, data={"position": position, "running": self.current or ""})
        else:
            self._start(running)
        self._prune()

    def _prepare(self, job: JobSpec, kind: JobKind, job_dir: Path, params: Mapping[str, Any]) -> _Running:
        user = self._job_user()
        if user:
            _check_job_path(job_dir, user)  # before anything is written: the job must not be able to swap it
        uid = _user_ids(user)[0] if user else os.geteuid()
        ctx = JobContext(job.id, job_dir, self.cores, self.sim, self.cfg, owner_uid=uid if uid is not None else -1)
        prepared = kind.prepare(params, ctx)
        for binary in dict.fromkeys((prepared.argv[0], *prepared.requires)):
            self._check_binary(binary, prepared.install_hint)
        running = _Running(job, ctx, kind, prepared, user=user)
        try:
            # Made while the directory is still the agent's alone, and kept open: the agent reads them back
            # through these descriptors, never through a name the job may have replaced (finding 5).
            running.output = AgentFile(job_dir, OUTPUT_LOG)
            if prepared.stdout_name:
                running.machine = AgentFile(job_dir, prepared.stdout_name)
            if user:
                _chown_tree(job_dir, user)
        except OSError as exc:
            running.close_files()
            raise JobRejected(f"cannot prepare the job directory {job_dir}: {exc.strerror or exc}", "job") from None
        return running

    def _admit(self, running: _Running) -> int:
        """0: start now; n: queued at position n. Raises JobRejected when the node is busy (caller holds the lock).
        A light job is counted against ``jobs.light_max`` and holds its place at once, so two submitted together
        cannot both pass before either started."""
        if not running.heavy:
            check_light(sum(not r.heavy for r in self._jobs.values()), self.cfg.light_max)
            self._jobs[running.spec.id] = running
            return 0
        busy = next((r.spec.id for r in self._jobs.values() if r.heavy), None) or (
            self._queue[0].spec.id if self._queue else None
        )
        if busy is None:
            self._jobs[running.spec.id] = running
            return 0
        if not running.spec.queue:
            raise JobRejected(
                f"node is busy with job {busy}; try again when it ends, or ask to queue (piclusterctl run --queue)",
                "job",
            )
        if len(self._queue) >= self.cfg.queue_max:
            raise JobRejected(
                f"node is busy with job {busy} and its queue is full ({self.cfg.queue_max} jobs, jobs.queue_max); "
                "try again later",
                "job",
            )
        self._queue.append(running)
        return len(self._queue)

    def _start(self, running: _Running) -> None:
        with self._lock:
            self._jobs[running.spec.id] = running
        running.thread = threading.Thread(
            target=self._run, args=(running, running.user), name=f"job-{running.spec.id}", daemon=True
        )
        running.thread.start()

    def cancel(self, job_id: str, reason: str = "cancelled by the operator") -> bool:
        """Stop the job if it runs (its thread then emits ``cancelled``) or drop it from the queue."""
        with self._lock:
            waiting = next((r for r in self._queue if r.spec.id == job_id), None)
            if waiting is not None:
                self._queue.remove(waiting)
            running = self._jobs.get(job_id)
            if running is not None:
                running.cancel_reason = reason
            started = running is not None and running.proc is not None
        if waiting is not None:
            waiting.close_files()
            self._emit("cancelled", job_id, reason=f"{reason} (while queued)")
            return True
        if running is None:
            return False
        if started:
            self._kill(running)
        return True

    @property
    def frozen(self) -> bool:
        with self._lock:
            return any(r.frozen for r in self._jobs.values())

    def freeze(self) -> bool:
        """SIGSTOP every process of the running job (the thermal guard's "hot"); True if one was frozen."""
        return self._set_frozen(True)

    def thaw(self) -> bool:
        """SIGCONT a frozen job; True if one was thawed."""
        return self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> bool:
        with self._lock:
            changed = [r for r in self._jobs.values() if r.proc is not None and r.frozen != frozen]
            now = time.monotonic()
            for running in changed:
                if frozen:
                    running.frozen_since = now
                else:
                    running.frozen_s += now - running.frozen_since
                running.frozen = frozen
        for running in changed:
            assert running.proc is not None
            _signal_session(running.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        return bool(changed)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop every job (agent exit): queued and running ones end as cancelled, never silently."""
        with self._lock:
            waiting, self._queue = list(self._queue), collections.deque()
            running = list(self._jobs.values())
        for job in waiting:
            job.close_files()
            self._emit("cancelled", job.spec.id, reason="the agent is stopping (the job was queued)")
        for job in running:
            job.cancel_reason = "the agent is stopping"
            self._kill(job)
            if job.thread is not None:
                job.thread.join(timeout_s)

    def busy_cores(self, now: float) -> float:
        """How many cores the running jobs kept busy since the last call (CPU time of their sessions)."""
        with self._lock:
            procs = [r.proc for r in self._jobs.values() if r.proc is not None]
        if not procs:
            self._cpu_prev = None
            return 0.0
        cpu = sum(_session_cpu_seconds(p.pid) for p in procs)
        prev, self._cpu_prev = self._cpu_prev, (now, cpu)
        if prev is None or now <= prev[0]:
            return 0.0
        return max(0.0, (cpu - prev[1]) / (now - prev[0]))

    # --- the job thread ----------------------------------------------------------------------------------------
    def _argv(self, running: _Running, user: str) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The argv to execute and the Popen user switch: in a systemd scope when systemd runs the machine."""
        argv = running.prepared.argv
        if self.cfg.systemd_scope == "auto" and self.systemd:
            ids = _user_ids(user)
            wrapped = scope_argv(argv, running.spec.id, uid=ids[0], gid=ids[1], properties=self.cfg.scope_properties)
            return wrapped, {}  # systemd-run switches user itself, after creating the scope as root
        return _as_user(argv, user)

    def _run(self, running: _Running, user: str) -> None:
        spec, ctx = running.spec, running.ctx
        assert running.output is not None  # _prepare made it
        limit = self.cfg.max_output_kb * 1024
        pump = OutputPump(limit, LogLimiter(self.cfg.log_lines_per_s), self._log_event(spec.id))
        kept = 0
        tmp: Path | None = None
        # The verdict goes out after the node is released (finally): whoever acts on it, an operator's next job
        # or a test, finds the node free, never "busy with the job that just ended".
        verdict: tuple[str, dict[str, Any]] = ("failed", {"reason": "the job ended without a verdict"})
        try:
            if running.heavy:  # light jobs leave the governor and the fan boost to the heavy one
                self.hooks.prepare()
            tmp = _private_tmp(spec.id, user, self.work_dir)
            env = {**job_environ(os.environ), **self.job_env, **running.prepared.env, **_tmp_env(tmp)}
            argv, user_kwargs = self._argv(running, user)
            machine = running.machine
            with open(running.output.fd, "wb", closefd=False) as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=ctx.work_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=machine.fd if machine else subprocess.PIPE,
                    stderr=subprocess.PIPE if machine else subprocess.STDOUT,
                    start_new_session=True,  # own session: cancel, kill and CPU accounting reach every rank
                    **user_kwargs,
                )
                with self._lock:
                    running.proc = proc
                    cancelled_early = bool(running.cancel_reason)
                if cancelled_early:  # cancel() came before the process existed
                    self._kill(running)
                running.started = time.monotonic()
                running.ctx = ctx = replace(ctx, started=running.started)
                self._emit("started", spec.id, data={"argv": list(argv), "pid": proc.pid})
                stream = proc.stderr if machine else proc.stdout
                reader = threading.Thread(target=pump.run, args=(stream, out), daemon=True)
                reader.start()
                self._watch(running, pump.tail)
                reader.join(5)
                pump.finish()
            kept = running.output.size()
            output = pump.output(running.output.text(limit))
            if machine is not None:
                running.ctx = ctx = replace(ctx, machine_output=machine.text(limit))
            if running.cancel_reason:
                verdict = ("cancelled", {"reason": running.cancel_reason})
                return
            result = running.kind.result(ctx, running.prepared, output, proc.returncode)
            result.setdefault("elapsed_s", round(time.monotonic() - running.started, 3))
            if pump.dropped:
                result["output_dropped_bytes"] = pump.dropped
            result.update(running.annotations)
            verdict = ("finished", {"result": result})
        except JobFailed as exc:
            verdict = ("failed", {"reason": str(exc)})
        except OSError as exc:
            verdict = ("failed", {"reason": f"could not start {running.prepared.argv[0]}: {exc.strerror or exc}"})
        except Exception as exc:  # a bug in a kind must still end the job, never leave it hanging
            log.exception("event=job_crash job=%s", spec.id)
            verdict = ("failed", {"reason": f"internal error in the {spec.kind} runner: {exc!r}"})
        finally:
            try:
                if running.heavy:
                    self.hooks.restore()
            except Exception:  # undoing the preparation must never hide the job's end
                log.exception("event=job_end_hook_failed job=%s", spec.id)
            if tmp is not None:
                _remove_tmp(self.work_dir / f"{spec.id}{TMP_MARK}")
            running.close_files()
            log.info("event=job_end job=%s output_bytes=%d", spec.id, kept)
            with self._lock:
                self._jobs.pop(spec.id, None)
                following = self._queue.popleft() if running.heavy and self._queue else None
                if following is not None:
                    self._jobs[following.spec.id] = following  # hold the node before the lock is let go
            self._cpu_prev = None
            self._emit(verdict[0], spec.id, **verdict[1])
            if following is not None:
                self._start(following)

    def _log_event(self, job_id: str) -> Callable[[str], None]:
        return lambda message: self._emit("log", job_id, message=message, data={"stream": "output"})

    def _watch(self, running: _Running, tail: collections.deque[str]) -> None:
        """Wait for the process, emitting progress and enforcing the timeout."""
        assert running.proc is not None
        last: tuple[float | None, str] | None = None
        limit_s = min(running.spec.timeout_s, running.prepared.timeout_s or running.spec.timeout_s)
        deadline = running.started + limit_s
        ready = getattr(running.kind, "ready", None)
        broken = False  # the kind's progress raised once: said once
        while True:
            try:
                running.proc.wait(timeout=self.cfg.progress_interval_s)
                return
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now > deadline + running.paused_s(now) and not running.cancel_reason:
                paused = running.paused_s(now)
                self._kill(running)
                running.proc.wait()
                frozen = f" (and {paused:.0f} s frozen by the thermal guard, not counted)" if paused >= 1 else ""
                raise JobFailed(f"timed out after {limit_s:g} s{frozen}; raise --timeout or make the problem smaller")
            if ready is not None and (answer := ready(running.ctx, running.prepared)) is not None:
                ready = None
                self._emit("ready", running.spec.id, data=dict(answer))
            try:
                progress = running.kind.progress(running.ctx, "".join(tail))
            except Exception:  # a kind's bug must not end the watch while its process runs on
                if not broken:
                    log.exception("event=job_progress_failed job=%s", running.spec.id)
                broken, progress = True, None
            if progress is not None and (progress.fraction, progress.phase) != last:
                last = running.progress = (progress.fraction, progress.phase)
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
        """The user jobs run as: the configured one when the agent is root ("" otherwise: a job then runs as the
        agent's own, unprivileged, user). Never root, in --sim too: a missing user refuses the job."""
        if os.geteuid() != 0:
            return ""
        problem = jobs_user_problem(self.cfg.user)
        if problem:
            raise JobRejected(problem, "jobs.user")
        return self.cfg.user

    def _check_binary(self, name: str, hint: str) -> None:
        if shutil.which(name) is None:
            raise JobRejected(
                f"{name} not found on this node; install it ({hint}) or set its path in [jobs]", "job.kind"
            )

    def _prune(self) -> None:
        """Keep the newest ``keep_jobs`` job directories; the rest are old results already published."""
        try:
            dirs = sorted((p for p in self.work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for old in dirs[: max(0, len(dirs) - self.cfg.keep_jobs)]:
            shutil.rmtree(old, ignore_errors=True)


def _user_ids(user: str) -> tuple[int | None, int | None]:
    if not user:
        return None, None
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def _as_user(argv: tuple[str, ...], user: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``argv`` run as ``user``: through util-linux's setpriv where it is, else Popen's own switch.

    Popen's ``user``/``group`` make CPython fork() instead of vfork(), and a fork copies the agent's page tables
    while it holds the GIL: 3 ms a job at 40 MB, 11 ms at 300 MB (a simulated fleet), against 0.5 ms. setpriv
    does the same setgroups/setregid/setreuid after the exec (real, effective and saved ids, no capabilities)."""
    uid, gid = _user_ids(user)
    if uid is None:
        return argv, {}
    if setpriv := shutil.which("setpriv"):
        return (setpriv, f"--regid={gid}", f"--reuid={uid}", "--clear-groups", "--", *argv), {}
    return argv, {"user": uid, "group": gid, "extra_groups": []}


def jobs_user_problem(user: str) -> str:
    """Why ``user`` cannot run jobs ("" when it can): it must exist and must not be root (uid or group 0)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return (
            f"jobs.user {user!r} does not exist and jobs never run as root; create it "
            f"(adduser --system --group {user}) or set jobs.user to an unprivileged user"
        )
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        return f"jobs.user {user!r} has uid {pw.pw_uid} and group {pw.pw_gid}: jobs never run as root; set another"
    return ""


def _check_job_path(path: Path, user: str) -> None:
    """The jobs user must be able to enter its job directory (or MPI fails with a cryptic cwd error), and must not
    be able to write the directories above it: it could swap its job directory for a link to anywhere, or plant
    the agent's own marks (``<job>.tmpdir``) beside it."""
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            bits = (stat.S_IXUSR, stat.S_IWUSR)
        elif st.st_gid in groups:
            bits = (stat.S_IXGRP, stat.S_IWGRP)
        else:
            bits = (stat.S_IXOTH, stat.S_IWOTH)
        if not st.st_mode & bits[0]:
            raise JobRejected(
                f"jobs user {user!r} cannot enter {parent}: make it traversable (chmod o+x {parent}) "
                "or move agent.state_dir",
                "jobs.user",
            )
        if (st.st_mode & bits[1] and not st.st_mode & stat.S_ISVTX) or st.st_uid == pw.pw_uid:
            raise JobRejected(
                f"jobs user {user!r} can write {parent}, above its job directories: give it to root and take the "
                f"write permission away (chown root: {parent} && chmod go-w {parent}) or move jobs.work_dir",
                "jobs.work_dir",
            )


def _private_tmp(job_id: str, user: str, work_dir: Path) -> Path:
    """A temporary directory for this job alone, removed when it ends. Open MPI keeps its session directory
    (the hwloc topology file, PMIx sockets) under TMPDIR named by host name and mpirun's pid: simulated nodes on
    one host share both, and their daemons corrupted each other's files until each job had its own. The path is
    short (under the system's temp dir, not the job directory) because PMIx puts Unix sockets in it. A mark in
    the agent's own work directory (not the job's, which the job may write) lets the next agent remove it after
    a crash."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{job_id[:24]}-"))
        (work_dir / f"{job_id}{TMP_MARK}").write_text(str(tmp))
    except OSError as exc:
        raise JobFailed(
            f"cannot create the job's temporary directory in {tempfile.gettempdir()}: {exc.strerror}; "
            "free space there or point the agent's TMPDIR elsewhere"
        ) from None
    if user:
        _chown_tree(tmp, user)
    return tmp


def _remove_tmp(mark: Path) -> None:
    with contextlib.suppress(OSError):
        tmp = Path(mark.read_text())
        # Only what _private_tmp made: the mark is the agent's, but never trust a path to rmtree blindly.
        if tmp.parent == Path(tempfile.gettempdir()) and tmp.name.startswith(TMP_PREFIX):
            shutil.rmtree(tmp, ignore_errors=True)
        mark.unlink()


def _tmp_env(tmp: Path) -> dict[str, str]:
    return {"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}


def _chown_tree(path: Path, user: str) -> None:
    """Hand a directory the agent made to the jobs user; links are changed themselves, never followed."""
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(top, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


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


class JobLoad:
    """Cores the node's jobs keep busy: what heats a simulated node. Bound to the runner once it exists."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def __call__(self) -> float:
        return self.runner.busy_cores(time.monotonic()) if self.runner else 0.0
