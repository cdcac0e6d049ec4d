"""A member's control files (nodeagent/mpi/control.py) and the member process that reads them (member.py): written
whole, readable by the job, never through a link; the member needs its leader's key where signatures are
required, and becomes exactly the daemon line its agent wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent.config import JobsSection, MpiSection
from nodeagent.errors import JobRejected
from nodeagent.jobs.kind import JobContext
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.control import LAUNCH_FILE, MEMBER_FILE, NO_LAUNCH_EXIT, ControlDir, read_json
from nodeagent.security.keys import SigningKey

REPO = Path(__file__).resolve().parents[2]
KEY = SigningKey.generate().public.b64


def ctx(tmp_path: Path) -> JobContext:
    (tmp_path / "job").mkdir(exist_ok=True)
    return JobContext("j1", tmp_path / "job", cores=4, sim=True, cfg=JobsSection())


def test_files_are_replaced_whole_readable_by_all_and_writable_by_the_agent_alone(tmp_path: Path) -> None:
    control = ControlDir(tmp_path / "control")
    path = control.write("j1", LAUNCH_FILE, {"argv": ["orted"]})
    control.write("j1", LAUNCH_FILE, {"argv": ["orted", "-mca", "x", "y"]})
    assert read_json(path) == {"argv": ["orted", "-mca", "x", "y"]}
    assert [p.name for p in control.of("j1").iterdir()] == [LAUNCH_FILE]  # no temporary file left behind
    for p, mode in ((control.root, 0o755), (control.of("j1"), 0o755), (path, 0o644)):
        assert p.stat().st_mode & 0o777 == mode and p.stat().st_uid == os.geteuid()


def test_a_link_is_never_read_through(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"argv": ["cat", "/etc/shadow"]}')
    control = ControlDir(tmp_path / "control")
    control.of("j1").mkdir(parents=True)
    (control.of("j1") / LAUNCH_FILE).symlink_to(secret)
    assert control.read("j1", LAUNCH_FILE) is None and read_json(tmp_path / "absent") is None


def test_only_the_newest_directories_are_kept(tmp_path: Path) -> None:
    control = ControlDir(tmp_path)
    for i in range(5):
        control.write(f"j{i}", MEMBER_FILE, {"leader": "a"})
        os.utime(control.of(f"j{i}"), (i, i))
    control.prune(keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j3", "j4"]


def test_a_member_that_requires_signatures_needs_its_leaders_key(tmp_path: Path) -> None:
    kind = ClusterHplKind(MpiSection(), control=ControlDir(tmp_path / "control"), signed_only=lambda: True)
    with pytest.raises(JobRejected, match=r"params\.leader_key is missing") as caught:
        kind.prepare({"role": "member", "leader": "a"}, ctx(tmp_path))
    assert caught.value.field == "params.leader_key"
    with pytest.raises(JobRejected, match=r"params\.leader_key: the key .* is not base64"):
        kind.prepare({"role": "member", "leader": "a", "leader_key": "zz*"}, ctx(tmp_path))
    prepared = kind.prepare({"role": "member", "leader": "a", "leader_key": KEY}, ctx(tmp_path))
    assert read_json(tmp_path / "control" / "j1" / MEMBER_FILE) == {"leader": "a", "key": KEY}
    assert prepared.argv[-1] == str(tmp_path / "control" / "j1")  # where the member looks for its launch
    assert not (tmp_path / "job" / MEMBER_FILE).exists()
    lax = ClusterHplKind(MpiSection(), control=ControlDir(tmp_path / "lax"))  # unsigned fleets: no key needed
    lax.prepare({"role": "member", "leader": "a"}, ctx(tmp_path))
    assert read_json(tmp_path / "lax" / "j1" / MEMBER_FILE) == {"leader": "a", "key": ""}


def member(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "nodeagent.mpi.member", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO)


def test_the_member_becomes_the_daemon_its_agent_wrote_or_gives_up(tmp_path: Path) -> None:
    control = ControlDir(tmp_path)
    control.write("j1", LAUNCH_FILE, {"argv": ["echo", "the daemon"], "leader": "a"})
    done = member("5", str(control.of("j1")))
    assert done.returncode == 0 and done.stdout == "the daemon\n"
    waited = member("0.2", str(tmp_path / "nothing"))
    assert waited.returncode == NO_LAUNCH_EXIT and "no launch request from the leader within 0.2 s" in waited.stderr
    control.write("j2", LAUNCH_FILE, {"argv": "rm -rf /"})
    bad = member("5", str(control.of("j2")))
    assert bad.returncode == NO_LAUNCH_EXIT and "no daemon command line" in bad.stderr
    assert json.loads((control.of("j2") / LAUNCH_FILE).read_text()) == {"argv": "rm -rf /"}
