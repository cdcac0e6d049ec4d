"""Which daemon command lines a member accepts (nodeagent/mpi/orted.py) and when it accepts a launch (launch.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.config import MpiSection
from nodeagent.errors import JobRejected
from nodeagent.mpi.launch import accept_launch
from nodeagent.mpi.orted import BadDaemonCommand, daemon_argv
from nodeagent.protocol import Command

LAUNCHER = "/usr/bin/python3 -m nodeagent.mpi.launcher"
# What Open MPI 4.1's mpirun really passed its plm_rsh_agent (recorded on Debian 12), after the host name.
REAL = [
    " orted",
    "-mca", "orte_leave_session_attached", '"1"',
    "-mca", "ess", '"env"',
    "-mca", "ess_base_jobid", '"1598685184"',
    "-mca", "ess_base_vpid", "1",
    "-mca", "ess_base_num_procs", '"2"',
    "-mca", "orte_node_regex", '"vm,nodeB@0(2)"',
    "-mca", "orte_hnp_uri", '"1598685184.0;tcp://192.0.2.2:44933;tcp6://[fd00::2]:37311"',
    "--mca", "plm_rsh_agent", f'"{LAUNCHER}"',
    "--mca", "plm_rsh_no_tree_spawn", '"1"',
    "--mca", "btl", '"self,tcp"',
    "-mca", "plm", '"rsh"',
    "-mca", "pmix", '"^s1,s2,cray,isolated"',
]  # fmt: skip


def test_the_real_daemon_line_is_accepted_and_unquoted() -> None:
    argv = daemon_argv(REAL, rsh_agents=(LAUNCHER, "ssh"))
    assert argv[0] == "orted"
    assert argv[argv.index("orte_hnp_uri") + 1] == "1598685184.0;tcp://192.0.2.2:44933;tcp6://[fd00::2]:37311"
    assert argv[argv.index("plm_rsh_agent") + 1] == LAUNCHER


@pytest.mark.parametrize(
    ("words", "why"),
    [
        (["bash", "-c", "id"], "only Open MPI's daemon"),
        (["/tmp/orted", *REAL[1:]], "only Open MPI's daemon"),
        (["PATH=/tmp;", *REAL], "only Open MPI's daemon"),
        ([*REAL, ";", "rm", "-rf", "/"], "unexpected word ';'"),
        ([*REAL, "--daemonize"], "unexpected word '--daemonize'"),
        ([*REAL, "-mca", "orte_fork_agent", "/bin/sh"], "start another program"),
        ([*REAL, "-mca", "plm_rsh_agent", "/tmp/evil"], "not this cluster's launcher"),
        ([*REAL, "-mca", "Bad-Name", "1"], "not an MCA parameter name"),
        ([*REAL, "-mca", "btl"], "needs a name and a value"),
        (["orted", "-mca", "ess", "env"], "lacks ess_base_jobid"),
        (["orted", "'unbalanced"], "does not parse"),
        ([], "empty"),
    ],
)
def test_anything_else_is_refused_with_the_reason(words: list[str], why: str) -> None:
    with pytest.raises(BadDaemonCommand, match=why):
        daemon_argv(words, rsh_agents=(LAUNCHER,))


_word = st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=12)


@given(st.lists(_word, max_size=30))
def test_arbitrary_words_never_crash_and_accepted_ones_run_only_the_daemon(words: list[str]) -> None:
    try:
        argv = daemon_argv(words, rsh_agents=(LAUNCHER,))
    except BadDaemonCommand:
        return
    assert argv[0] in ("orted", "prted")
    assert "--daemonize" not in argv


@given(st.lists(st.sampled_from(["ess", "btl", "routed", "pmix"]), max_size=5), st.lists(_word, max_size=5))
def test_any_mca_values_survive_the_quoting_round_trip(names: list[str], values: list[str]) -> None:
    required = ["-mca", "ess_base_jobid", "1", "-mca", "ess_base_vpid", "1", "-mca", "orte_hnp_uri", "x"]
    pairs = [w for n, v in zip(names, values, strict=False) for w in ("-mca", n, v)]
    words = ["orted", *required, *(shlex.quote(w) for w in pairs)]
    if any("\n" in v for v in values):
        return
    assert daemon_argv(words) == ["orted", *required, *pairs]


# --- accept_launch -----------------------------------------------------------------------------------------------


def _member_dir(tmp_path: Path, job: str = "j1", leader: str = "node1") -> Path:
    job_dir = tmp_path / job
    job_dir.mkdir()
    (job_dir / "member.json").write_text(json.dumps({"leader": leader}))
    return job_dir


def _launch(job: str = "j1", sender: str = "node1", words: list[str] | None = None) -> Command:
    return Command(id=f"{job}.launch-1", cmd="launch", job_id=job, argv=tuple(words or REAL), sender=sender)


def test_a_launch_from_the_leader_for_the_held_job_is_handed_to_the_member(tmp_path: Path) -> None:
    job_dir = _member_dir(tmp_path)
    mpi = MpiSection(launch_agent=LAUNCHER)
    argv = accept_launch(_launch(), "j1", tmp_path, mpi)
    assert json.loads((job_dir / "launch.json").read_text()) == {"argv": argv, "leader": "node1"}
    with pytest.raises(JobRejected, match="already launched"):
        accept_launch(_launch(), "j1", tmp_path, mpi)


@pytest.mark.parametrize(
    ("current", "cmd", "why"),
    [
        (None, _launch(), "runs no job"),
        ("other", _launch(), "runs job other"),
        ("j1", _launch(sender="node9"), "only the job's leader node1"),
        ("j1", _launch(words=["bash", "-c", "id"]), "launch refused: only Open MPI's daemon"),
    ],
)
def test_other_launches_are_refused(tmp_path: Path, current: str | None, cmd: Command, why: str) -> None:
    job_dir = _member_dir(tmp_path)
    with pytest.raises(JobRejected, match=why):
        accept_launch(cmd, current, tmp_path, MpiSection(launch_agent=LAUNCHER))
    assert not (job_dir / "launch.json").exists()


def test_a_launch_for_a_single_node_job_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j1").mkdir()  # running, but not as a member (no member.json)
    with pytest.raises(JobRejected, match="not a cluster job this node is a member of"):
        accept_launch(_launch(), "j1", tmp_path, MpiSection(launch_agent=LAUNCHER))
