"""The systemd scope around a job: the command is built purely here (no systemd as PID 1 on CI); without
systemd the runner runs jobs plainly (the integration tests run that path for real)."""

from __future__ import annotations

import os
from pathlib import Path

from nodeagent.config import JobsSection
from nodeagent.jobs.runner import Runner, _Running
from nodeagent.jobs.scope import scope_argv, systemd_running, unit_name
from nodeagent.protocol import JobSpec


def test_scope_argv_ends_options_before_the_job() -> None:
    argv = scope_argv(
        ("stress-ng", "--cpu", "1", "--", "x"), "stress-1", uid=110, gid=120, properties=("MemoryMax=90%",)
    )
    assert argv == (
        "systemd-run", "--scope", "--quiet", "--collect", "--unit=picluster-job-stress-1.scope",
        "--property=MemoryMax=90%", "--uid=110", "--gid=120", "--", "stress-ng", "--cpu", "1", "--", "x",
    )  # fmt: skip
    assert scope_argv(("a",), "j")[-2:] == ("--", "a") and "--uid" not in " ".join(scope_argv(("a",), "j"))
    assert unit_name("hpl-20261123-1.x") == "picluster-job-hpl-20261123-1.x.scope"


def test_systemd_is_detected_by_its_runtime_directory(tmp_path: Path) -> None:
    assert systemd_running(str(tmp_path)) is True
    assert systemd_running(str(tmp_path / "absent")) is False
    assert systemd_running() is os.path.isdir("/run/systemd/system")


def _running(runner: Runner, tmp_path: Path) -> _Running:
    from nodeagent.jobs.kind import JobContext

    job = JobSpec(id="s1", kind="stress", params={"duration_s": 1})
    ctx = JobContext("s1", tmp_path, cores=2, sim=True, cfg=runner.cfg)
    return _Running(job, ctx, runner._kinds["stress"], runner._kinds["stress"].prepare(job.params, ctx))


def test_runner_wraps_jobs_in_a_scope_only_where_systemd_runs(tmp_path: Path) -> None:
    cfg = JobsSection(kinds=("stress",), scope_properties=("CPUWeight=50",))
    runner = Runner(cfg, tmp_path, cores=2, sim=True, emit=lambda *a, **k: None)
    running = _running(runner, tmp_path)
    runner.systemd = True
    argv, kwargs = runner._argv(running, "")
    assert argv[:5] == ("systemd-run", "--scope", "--quiet", "--collect", "--unit=picluster-job-s1.scope")
    assert argv[5] == "--property=CPUWeight=50" and argv[argv.index("--") + 1] == "stress-ng" and kwargs == {}
    runner.systemd = False
    argv, kwargs = runner._argv(running, "")
    assert argv[0] == "stress-ng" and kwargs == {}
    runner.systemd = True
    runner.cfg = JobsSection(kinds=("stress",), systemd_scope="off")
    assert runner._argv(running, "")[0][0] == "stress-ng"
