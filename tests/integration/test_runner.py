"""The job runner with real processes: users, sessions, timeout, cancel, CPU accounting, at-most-once."""

from __future__ import annotations

import os
import pwd
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from nodeagent.config import JobsSection
from nodeagent.errors import JobRejected
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.kinds import KINDS
from nodeagent.jobs.runner import Runner
from nodeagent.protocol import JobSpec
from scripts.localcluster import SIM_JOBS_USER, open_to_jobs

# Two busy processes in one job, each in its own process group, like Open MPI's ranks.
SPIN = (
    "import os, sys, time\n"
    "if sys.argv[1] == 'parent':\n"
    "    for _ in range(2):\n"
    "        if os.fork() == 0:\n"
    "            os.setpgid(0, 0)\n"
    "            os.execv(sys.executable, [sys.executable, '-c', open(sys.argv[2]).read(), 'child'])\n"
    "end = time.monotonic() + float(os.environ.get('SPIN_S', '60'))\n"
    "while time.monotonic() < end: pass\n"
)


class SpinKind:
    """A job kind that burns CPU in three processes for ``seconds``: exercises the runner, not a parser."""

    name = "spin"

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> Prepared:
        script = ctx.work_dir / "spin.py"
        script.write_text(SPIN)
        return Prepared(
            argv=(sys.executable, "-c", SPIN, "parent", str(script)), env={"SPIN_S": str(params.get("seconds", 60))}
        )

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        return Progress(None, "spinning")

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        return {"returncode": returncode}


class TmpKind:
    """Writes a file into its TMPDIR and reports where that was: the runner's private temporary directory."""

    name = "tmpdir"

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> Prepared:
        script = "import os; d = os.environ['TMPDIR']; open(os.path.join(d, 'x'), 'w').write('x'); print(d)"
        return Prepared(argv=(sys.executable, "-c", script), heavy=False)

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        return None

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        return {"returncode": returncode, "tmpdir": output.strip()}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.done = threading.Event()

    def __call__(self, kind: str, job: str, **fields: Any) -> None:
        self.events.append((kind, job, fields))
        if kind in ("finished", "failed", "cancelled"):
            self.done.set()

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]


def make(tmp_path: Path, **cfg: Any) -> tuple[Runner, Recorder]:
    """A runner whose jobs run as SIM_JOBS_USER (never root), in ``tmp_path/jobs``."""
    rec = Recorder()
    open_to_jobs(tmp_path)
    jobs = JobsSection(**{"kinds": ("hpl", "spin", "tmpdir"), "progress_interval_s": 0.2, "user": SIM_JOBS_USER, **cfg})
    kinds = {**KINDS, "spin": SpinKind(), "tmpdir": TmpKind()}
    runner = Runner(jobs, tmp_path / "jobs", cores=4, sim=True, emit=rec, kinds=kinds)
    return runner, rec


def test_cancel_stops_every_process_of_the_job(tmp_path: Path) -> None:
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="s1", kind="spin"), {}, accepted=lambda plan: rec("accepted", "s1"))
    pid = _wait_started(rec)
    _wait_for(lambda: len(_session(pid)) == 3, "three processes")
    assert runner.cancel("s1")
    assert rec.done.wait(15)
    assert rec.kinds() == ["accepted", "started", *["progress"] * rec.kinds().count("progress"), "cancelled"]
    assert rec.events[-1][2]["reason"] == "cancelled by the operator"
    assert _session(pid) == []
    assert runner.current is None


def test_timeout_fails_the_job_and_kills_it(tmp_path: Path) -> None:
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="s2", kind="spin", timeout_s=0.5), {}, accepted=lambda plan: None)
    pid = _wait_started(rec)
    assert rec.done.wait(15)
    kind, _, fields = rec.events[-1]
    assert kind == "failed" and "timed out after 0.5 s" in fields["reason"]
    assert _session(pid) == []


def test_time_frozen_by_the_thermal_guard_does_not_count_against_the_timeout(tmp_path: Path) -> None:
    # A 4 s job with a 3.5 s timeout, frozen for 3 s of it: the guard's pause is the node's doing, not the job's.
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="s9", kind="spin", timeout_s=3.5), {"seconds": 4}, accepted=lambda plan: None)
    pid = _wait_started(rec)
    _wait_for(lambda: len(_session(pid)) == 3, "three processes")
    time.sleep(0.5)  # each has read the clock its 4 s count from
    assert runner.freeze()
    time.sleep(3.0)
    assert runner.thaw()
    assert rec.done.wait(15)
    assert rec.events[-1][0] == "finished", rec.events[-1]


def test_busy_cores_counts_every_process_of_the_session(tmp_path: Path) -> None:
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="s3", kind="spin"), {"seconds": 30}, accepted=lambda plan: None)
    pid = _wait_started(rec)
    _wait_for(lambda: len(_session(pid)) == 3, "three processes")
    pids = _session(pid)
    t0, cpu0 = time.monotonic(), {p: _cpu_s(p) for p in pids}
    runner.busy_cores(t0)
    time.sleep(1.0)
    t1 = time.monotonic()
    busy = runner.busy_cores(t1)
    by_pid = {p: (_cpu_s(p) - cpu0[p]) / (t1 - t0) for p in pids}
    runner.cancel("s3")
    rec.done.wait(15)
    # The same figure measured independently, process by process; every process counted, not only the first.
    assert busy == pytest.approx(sum(by_pid.values()), rel=0.25), (busy, by_pid)
    assert busy > max(by_pid.values()) * 1.5
    assert runner.busy_cores(time.monotonic()) == 0.0


def test_one_heavy_job_at_a_time_and_each_id_once(tmp_path: Path) -> None:
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="a", kind="spin"), {}, accepted=lambda plan: None)
    with pytest.raises(JobRejected, match="busy with job a"):
        runner.submit(JobSpec(id="b", kind="spin"), {}, accepted=lambda plan: None)
    runner.cancel("a")
    assert rec.done.wait(15)
    with pytest.raises(JobRejected, match="already received") as err:
        runner.submit(JobSpec(id="a", kind="spin"), {}, accepted=lambda plan: None)
    assert err.value.field == "job.id"


def test_kinds_outside_the_config_are_refused(tmp_path: Path) -> None:
    rec = Recorder()
    runner = Runner(
        JobsSection(kinds=("hpl",)), tmp_path, cores=4, sim=True, emit=rec, kinds={**KINDS, "spin": SpinKind()}
    )
    with pytest.raises(JobRejected, match=r"'spin' is not allowed on this node \(jobs.kinds: hpl\)"):
        runner.submit(JobSpec(id="x", kind="spin"), {}, accepted=lambda plan: None)


def test_each_job_has_its_own_temporary_directory_removed_when_it_ends(tmp_path: Path) -> None:
    # Two simulated nodes on one host must not share Open MPI's session directory (it lives under TMPDIR).
    # As root the job runs as nobody, so writing its file proves the directory was handed to the jobs user.
    runner, rec = make(tmp_path)
    seen = []
    for job in ("t1", "t2"):
        rec.done.clear()
        runner.submit(JobSpec(id=job, kind="tmpdir"), {}, accepted=lambda plan: None)
        assert rec.done.wait(15)
        kind, _, fields = rec.events[-1]
        assert kind == "finished" and fields["result"]["returncode"] == 0, rec.events[-1]
        seen.append(Path(fields["result"]["tmpdir"]))
    assert seen[0] != seen[1]
    assert all(d.parent == Path(tempfile.gettempdir()) and j in d.name for d, j in zip(seen, ("t1", "t2"), strict=True))
    _wait_for(lambda: not any(d.exists() for d in seen), "the jobs' temporary directories to be removed")


def test_a_new_agent_kills_the_last_ones_jobs_and_removes_their_temporary_directories(tmp_path: Path) -> None:
    runner, rec = make(tmp_path)
    runner.submit(JobSpec(id="o1", kind="spin"), {}, accepted=lambda plan: None)
    pid = _wait_started(rec)
    _wait_for(lambda: len(_session(pid)) == 3, "three processes")
    tmp = Path((tmp_path / "jobs" / "o1.tmpdir").read_text())
    assert tmp.is_dir()
    # The agent died without cleaning up; the next one starts on the same work directory.
    successor, _ = make(tmp_path)
    assert successor.reap_orphans() == ["o1"]
    _wait_for(lambda: _session(pid) == [], "the orphaned processes to die")
    assert not tmp.exists() and not (tmp_path / "jobs" / "o1.tmpdir").exists()
    assert rec.done.wait(15)  # the old runner's thread saw its process die


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the jobs user needs root")
def test_jobs_run_as_the_jobs_user_never_root(tmp_path: Path) -> None:
    runner, rec = make(tmp_path, user="nobody")
    runner.submit(JobSpec(id="u1", kind="hpl"), {"n": 500, "nb": 50, "p": 1, "q": 1}, accepted=lambda plan: None)
    pid = _wait_started(rec)
    uids = {pid: _uid(pid)}
    assert rec.done.wait(60)
    assert rec.events[-1][0] == "finished", rec.events[-1]
    assert uids[pid] in (pwd.getpwnam("nobody").pw_uid, None)  # None: it already ended
    assert (tmp_path / "jobs" / "u1" / "hpccoutf.txt").stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the jobs user needs root")
def test_a_work_dir_the_jobs_user_cannot_enter_is_refused_with_the_fix(tmp_path: Path) -> None:
    runner, _ = make(tmp_path, user="nobody")
    tmp_path.chmod(0o700)
    with pytest.raises(JobRejected, match=f"cannot enter {tmp_path}: make it traversable"):
        runner.submit(JobSpec(id="u2", kind="hpl"), {"n": 500, "nb": 50, "p": 1, "q": 1}, accepted=lambda p: None)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to the jobs user")
@pytest.mark.parametrize("sim", [False, True])
def test_a_missing_jobs_user_is_refused_in_sim_too(tmp_path: Path, sim: bool) -> None:
    rec = Recorder()
    runner = Runner(JobsSection(user="no-such-user-xyz"), tmp_path, cores=4, sim=sim, emit=rec)
    with pytest.raises(JobRejected, match="does not exist and jobs never run as root") as err:
        runner.submit(JobSpec(id="x", kind="hpl"), {"n": 500, "nb": 50, "p": 1, "q": 1}, accepted=lambda p: None)
    assert err.value.field == "jobs.user" and "adduser --system --group no-such-user-xyz" in err.value.reason
    assert rec.events == [] and not (tmp_path / "x").exists()


def _wait_started(rec: Recorder) -> int:
    _wait_for(lambda: "started" in rec.kinds(), "the job to start")
    return next(f["data"]["pid"] for k, _, f in rec.events if k == "started")


def _wait_for(cond: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _session(sid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(name))
    return out


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Uid:"))
    except FileNotFoundError:
        return None
