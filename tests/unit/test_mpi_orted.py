"""Which daemon command lines a member accepts (nodeagent/mpi/orted.py), whose mpirun it obeys (leader_addr.py),
and when it accepts a launch (launch.py). The accepted lines are Open MPI 4.1's own, recorded (tests/data/mpi)."""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.config import MpiSection
from nodeagent.errors import JobRejected
from nodeagent.mpi.control import ControlDir
from nodeagent.mpi.launch import accept_launch
from nodeagent.mpi.leader_addr import LeaderUnknown, is_local, leader_check
from nodeagent.mpi.orted import PARAMS, BadDaemonCommand, HnpUri, daemon_argv, parse_hnp_uri, pin_hnp
from nodeagent.protocol import Command
from tests.mpi_recorded import recorded_lines, replaced, value

RECORDED = recorded_lines()


def _hnp(words: list[str]) -> HnpUri:
    return parse_hnp_uri(value(words, "orte_hnp_uri"))


REAL = RECORDED[0][1]  # two simulated nodes on this machine
LAUNCHER = value(REAL, "plm_rsh_agent")
LEADER_IP = str(_hnp(REAL).addresses[0])


def by_name(*addresses: str) -> Callable[[str], list[str]]:
    """A resolver that answers what /etc/hosts would."""
    return lambda name: list(addresses)


@pytest.mark.parametrize(("what", "words"), RECORDED, ids=[w for w, _ in RECORDED])
def test_every_recorded_daemon_line_is_accepted_and_pinned_to_its_leader(what: str, words: list[str]) -> None:
    argv = daemon_argv(words, rsh_agents=(value(words, "plm_rsh_agent"), "ssh"))
    assert argv[0] == "orted" and "--daemonize" not in argv
    hnp = _hnp(words)
    assert argv[argv.index("orte_hnp_uri") + 1] == str(hnp)  # the round trip of ORTE's format is exact
    leader = {str(a) for a in hnp.addresses}
    pinned = pin_hnp(argv, lambda a: str(a) in leader, "node1")
    assert pinned == argv


def test_the_real_line_is_unquoted() -> None:
    argv = daemon_argv(REAL, rsh_agents=(LAUNCHER,))
    assert argv[argv.index("ess") + 1] == "env"
    assert argv[argv.index("plm_rsh_agent") + 1] == LAUNCHER


# --- each hostile value of issue 12 finding 1, and others ----------------------------------------------------------

HOSTILE = [
    ("mca_base_component_path", "/tmp/evil", "load Open MPI components"),
    ("mca_base_param_files", "/tmp/evil.conf", "read more parameters from a file"),
    ("mca_base_envar_file_prefix", "/tmp/evil", "read parameters from files"),
    ("orte_report_uri", "file:/tmp/uri", "report the daemon's contact address"),
    ("plm_ssh_agent", "/bin/sh -c id", "PRRTE's launcher"),
    ("orte_fork_agent", "/bin/sh", "start every process through a program"),
    ("orte_launch_agent", "/tmp/orted", "start another program"),
    ("opal_signal", "6,7,8", "not one Open MPI's mpirun sends"),
    ("orte_tmpdir_base", "/tmp/x", "not one Open MPI's mpirun sends"),
]


@pytest.mark.parametrize(("name", "value", "why"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_each_hostile_parameter_is_refused_naming_it(name: str, value: str, why: str) -> None:
    for flag in ("-mca", "--mca"):
        with pytest.raises(BadDaemonCommand, match=why) as caught:
            daemon_argv([*REAL, flag, name, shlex.quote(value)], rsh_agents=(LAUNCHER,))
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("words", "why"),
    [
        (["bash", "-c", "id"], "only Open MPI's daemon"),
        (["prted", *REAL[1:]], "only Open MPI's daemon"),
        (["/tmp/orted", *REAL[1:]], "only Open MPI's daemon"),
        (["PATH=/tmp;", *REAL], "only Open MPI's daemon"),
        ([*REAL, ";", "rm", "-rf", "/"], "unexpected word ';'"),
        ([*REAL, "--daemonize"], "unexpected word '--daemonize'"),
        ([*REAL, "--debug-daemons"], "unexpected word '--debug-daemons'"),
        ([*REAL, "-gmca", "btl", "tcp"], "unexpected word '-gmca'"),
        ([*REAL, "-mca", "btl", "tcp"], "btl is given twice"),
        (replaced(REAL, "plm_rsh_agent", "/tmp/evil"), "not this cluster's launcher"),
        (replaced(REAL, "plm", "ssh"), "plm='ssh': expected 'rsh'"),
        (replaced(REAL, "plm_rsh_no_tree_spawn", "0"), "expected '1'"),
        (replaced(REAL, "orte_leave_session_attached", "0"), "expected '1'"),
        (replaced(REAL, "btl", "self,tcp;id"), "a list of component names"),
        (replaced(REAL, "ess_base_vpid", "0"), "a number from 1"),
        (replaced(REAL, "ess_base_vpid", "2"), "below ess_base_num_procs"),
        (replaced(REAL, "ess_base_jobid", "12"), "not mpirun of job 12"),
        (replaced(REAL, "orte_hnp_uri", "1.0;http://192.0.2.9/x"), "not a tcp:// or tcp6:// contact"),
        (replaced(REAL, "orte_hnp_uri", "nonsense"), "is not mpirun's contact"),
        (replaced(REAL, "orte_node_regex", "$(id)"), "Open MPI's node list"),
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


def test_a_long_hostile_value_is_quoted_back_short() -> None:
    with pytest.raises(BadDaemonCommand) as caught:
        daemon_argv(replaced(REAL, "btl", "x;" * 4000), rsh_agents=(LAUNCHER,))
    assert len(str(caught.value)) < 400 and "(8000 long)" in str(caught.value)


# --- orte_hnp_uri: only the leader's mpirun ----------------------------------------------------------------------


def test_a_foreign_hnp_uri_is_refused() -> None:
    jobid = _hnp(REAL).jobid
    words = replaced(REAL, "orte_hnp_uri", f"{jobid}.0;tcp://203.0.113.9:4444")
    argv = daemon_argv(words, rsh_agents=(LAUNCHER,))
    with pytest.raises(BadDaemonCommand, match=r"points at 203\.0\.113\.9, none of which is the leader node1's"):
        pin_hnp(argv, leader_check("node1", sim=False, resolver=by_name(LEADER_IP)), "node1")


def test_foreign_addresses_beside_the_leaders_are_taken_out() -> None:
    jobid = _hnp(REAL).jobid
    words = replaced(REAL, "orte_hnp_uri", f"{jobid}.0;tcp://203.0.113.9,{LEADER_IP}:4444;tcp6://[2001:db8::9]:5555")
    argv = daemon_argv(words, rsh_agents=(LAUNCHER,))
    pinned = pin_hnp(argv, leader_check("node1", sim=False, resolver=by_name(LEADER_IP)), "node1")
    assert pinned[pinned.index("orte_hnp_uri") + 1] == f"{jobid}.0;tcp://{LEADER_IP}:4444"


def test_the_leaders_address_comes_from_this_nodes_resolver_not_the_request() -> None:
    with pytest.raises(LeaderUnknown, match=r"add '<address> node1' to /etc/hosts"):
        leader_check("node1", sim=False, resolver=lambda name: (_ for _ in ()).throw(OSError("no such name")))
    with pytest.raises(LeaderUnknown, match="only to loopback"):
        leader_check("node1", sim=False, resolver=by_name("127.0.1.1"))
    check = leader_check("node1", sim=False, resolver=by_name("10.0.0.1", "fd00::1%eth0", "127.0.1.1"))
    assert check(ipaddress.ip_address("10.0.0.1")) and check(ipaddress.ip_address("fd00::1"))
    assert not check(ipaddress.ip_address("127.0.0.1")) and not check(ipaddress.ip_address("10.0.0.2"))


def test_a_simulated_member_also_accepts_its_own_machine_and_nothing_else() -> None:
    check = leader_check("node1", sim=True, resolver=lambda name: (_ for _ in ()).throw(OSError("unknown")))
    assert check(ipaddress.ip_address("127.0.0.1"))
    assert check(ipaddress.ip_address(LEADER_IP)) == is_local(ipaddress.ip_address(LEADER_IP))
    assert not check(ipaddress.ip_address("203.0.113.9"))


_v4 = st.ip_addresses(v=4)
_v6 = st.ip_addresses(v=6)


@given(
    st.integers(1, 2**32 - 1),
    st.lists(_v4, min_size=1, max_size=4),
    st.lists(_v6, max_size=3),
    st.integers(1, 65535),
    st.integers(1, 65535),
)
def test_hnp_uris_round_trip(jobid: int, v4: list, v6: list, port4: int, port6: int) -> None:
    text = f"{jobid}.0;tcp://{','.join(map(str, v4))}:{port4}"
    if v6:
        text += f";tcp6://[{','.join(map(str, v6))}]:{port6}"
    hnp = parse_hnp_uri(text)
    assert str(hnp) == text and hnp.addresses == (*v4, *v6)
    assert hnp.only(lambda a: a.version == 4).addresses == tuple(v4)


# --- random input --------------------------------------------------------------------------------------------------

_word = st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=12)


@given(st.lists(_word, max_size=30))
def test_arbitrary_words_never_crash_and_accepted_ones_run_only_the_daemon(words: list[str]) -> None:
    try:
        argv = daemon_argv(words, rsh_agents=(LAUNCHER,))
    except BadDaemonCommand:
        return
    assert argv[0] == "orted"
    assert all(argv[i] in ("-mca", "--mca") and argv[i + 1] in PARAMS for i in range(1, len(argv), 3))


_name = st.one_of(st.sampled_from([*PARAMS, *(h[0] for h in HOSTILE)]), st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z"))


@given(st.lists(st.tuples(_name, _word), min_size=1, max_size=4), st.integers(0, 40))
def test_random_parameters_in_a_real_line_are_accepted_only_on_the_list(pairs: list, at: int) -> None:
    base = shlex.split(" ".join(REAL))
    at = 1 + 3 * (at % ((len(base) - 1) // 3 + 1))
    extra = [w for name, value in pairs for w in ("-mca", name, value)]
    words = [shlex.quote(w) for w in (*base[:at], *extra, *base[at:])]
    try:
        argv = daemon_argv(words, rsh_agents=(LAUNCHER,))
    except BadDaemonCommand:
        return
    names = [argv[i + 1] for i in range(1, len(argv), 3)]
    assert set(names) <= set(PARAMS) and len(names) == len(set(names))
    assert all(PARAMS[n](argv[i + 2]) is None for i, n in zip(range(1, len(argv), 3), names, strict=True))


# --- accept_launch -----------------------------------------------------------------------------------------------


MPI = MpiSection(launch_agent=LAUNCHER)


def _member_dir(tmp_path: Path, job: str = "j1", leader: str = "node1") -> Path:
    """The member job's control directory, as the member kind writes it (nodeagent/mpi/control.py)."""
    ControlDir(tmp_path).write(job, "member.json", {"leader": leader, "key": ""})
    return tmp_path / job


def _launch(job: str = "j1", sender: str = "node1", words: list[str] | None = None) -> Command:
    return Command(id=f"{job}.launch-1", cmd="launch", job_id=job, argv=tuple(words or REAL), sender=sender)


def test_a_launch_from_the_leader_for_the_held_job_is_handed_to_the_member(tmp_path: Path) -> None:
    job_dir = _member_dir(tmp_path)
    mpi = MpiSection(launch_agent=LAUNCHER)
    argv = accept_launch(_launch(), "j1", ControlDir(tmp_path), mpi, resolver=by_name(LEADER_IP))
    assert json.loads((job_dir / "launch.json").read_text()) == {"argv": argv, "leader": "node1"}
    with pytest.raises(JobRejected, match="already launched"):
        accept_launch(_launch(), "j1", ControlDir(tmp_path), mpi, resolver=by_name(LEADER_IP))


@pytest.mark.parametrize(
    ("current", "cmd", "why"),
    [
        (None, _launch(), "runs no job"),
        ("other", _launch(), "runs job other"),
        ("j1", _launch(sender="node9"), "only the job's leader node1"),
        ("j1", _launch(words=["bash", "-c", "id"]), "launch refused: only Open MPI's daemon"),
        ("j1", _launch(words=[*REAL, "-mca", "mca_base_component_path", "/tmp"]), "launch refused: MCA parameter"),
    ],
)
def test_other_launches_are_refused(tmp_path: Path, current: str | None, cmd: Command, why: str) -> None:
    job_dir = _member_dir(tmp_path)
    with pytest.raises(JobRejected, match=why):
        accept_launch(cmd, current, ControlDir(tmp_path), MPI, resolver=by_name(LEADER_IP))
    assert not (job_dir / "launch.json").exists()


def test_a_launch_whose_mpirun_is_not_on_the_leader_is_refused(tmp_path: Path) -> None:
    job_dir = _member_dir(tmp_path)
    with pytest.raises(JobRejected, match="none of which is the leader node1's address"):
        accept_launch(_launch(), "j1", ControlDir(tmp_path), MPI, resolver=by_name("10.9.9.9"))
    assert not (job_dir / "launch.json").exists()


def test_a_launch_for_a_single_node_job_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j1").mkdir()  # running, but not as a member (no member.json in its control directory)
    with pytest.raises(JobRejected, match="not a cluster job this node is a member of"):
        accept_launch(_launch(), "j1", ControlDir(tmp_path), MpiSection(launch_agent=LAUNCHER))
