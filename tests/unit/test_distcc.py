"""The distcc kind without running it: argv and environment of both roles, every refusal (no shell, nothing outside
the build root, no privileged port, never root), distcc's own logs as recorded, the node's addresses, and the
controller's plan and per-node shares."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.distcc_plan import JOBS_PER_CORE, plan_distcc, shares
from controller.fleet import NodeView
from controller.orchestrate import PlanError
from nodeagent.config import JobsSection
from nodeagent.errors import JobFailed, JobRejected
from nodeagent.jobs.kind import JobContext
from nodeagent.jobs.kinds import KINDS, distcc
from nodeagent.netaddr import ipv4_from_fib_trie, ipv6_from_if_inet6
from nodeagent.protocol import NodeFacts, jobs
from nodeagent.protocol.jobs import distcc_hosts, ipv4_list, make_targets

DATA = Path(__file__).resolve().parents[1] / "data"
KIND = KINDS["distcc"]


def ctx(tmp_path: Path, **cfg: Any) -> JobContext:
    work = tmp_path / "job"
    work.mkdir(exist_ok=True)
    return JobContext("j1", work, cores=4, sim=True, cfg=JobsSection(**cfg))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A build root with a project that has a makefile, one without, and a link pointing out of the root."""
    root = tmp_path / "build"
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "Makefile").write_text("all:\n")
    (root / "empty").mkdir()
    (root / "escape").symlink_to("/etc")
    return root


def leader(**params: Any) -> dict[str, Any]:
    return {"role": "leader", "dir": "proj", "jobs": 24, "hosts": "localhost/4 10.0.0.12:3632/4", **params}


def test_the_worker_runs_distccd_listening_on_its_route_to_the_leader_for_the_selection_only(tmp_path: Path) -> None:
    p = KIND.prepare({"role": "worker", "allow": "127.0.0.1,127.0.0.2", "leader": "127.0.0.1"}, ctx(tmp_path))
    assert p.argv[:8] == ("distccd", "--daemon", "--no-detach", "--listen", "127.0.0.1", "--port", "3632", "--jobs")
    assert p.argv[8] == "4"  # slots: the node's cores
    assert p.argv[-4:] == ("--allow", "127.0.0.1", "--allow", "127.0.0.2")
    assert p.argv[p.argv.index("--log-file") + 1] == str(tmp_path / "job" / distcc.DAEMON_LOG)
    assert p.plan == {"role": "worker", "port": 3632, "host": "127.0.0.1", "allow": ["127.0.0.1", "127.0.0.2"],
                      "slots": 4}  # fmt: skip
    assert p.install_hint == "apt install distcc"
    given_host = KIND.prepare(
        {"role": "worker", "allow": "10.0.0.11", "leader": "10.0.0.11", "port": "4000", "slots": 2},
        ctx(tmp_path, advertise_host="10.0.0.12"),
    )
    assert given_host.plan["host"] == "10.0.0.12" and given_host.plan["port"] == 4000 and "2" in given_host.argv


def test_the_leader_runs_make_through_distcc_in_the_build_dir(tmp_path: Path, tree: Path) -> None:
    c = ctx(tmp_path, build_root=str(tree))
    p = KIND.prepare(leader(target="Image modules", cc="aarch64-linux-gnu-gcc"), c)
    assert p.argv == (
        "make",
        "-C",
        str(tree / "proj"),
        "-j",
        "24",
        "CC=distcc aarch64-linux-gnu-gcc",
        "Image",
        "modules",
    )
    assert p.env["DISTCC_HOSTS"] == "localhost/4 10.0.0.12:3632/4"
    assert p.env["DISTCC_DIR"] == str(c.work_dir / "distcc") and (c.work_dir / "distcc").is_dir()
    assert p.env["DISTCC_LOG"] == str(c.work_dir / "distcc.log")
    assert p.requires == ("distcc", "aarch64-linux-gnu-gcc")
    absolute = KIND.prepare(leader(dir=str(tree / "proj")), c)
    assert absolute.argv[2] == str(tree / "proj") and absolute.argv[-1] == "CC=distcc gcc"


@pytest.mark.parametrize(
    ("params", "message", "field"),
    [
        ({"dir": "/etc"}, "dir '/etc' is outside jobs.build_root", "params.dir"),
        ({"dir": "../.."}, "is outside jobs.build_root", "params.dir"),
        ({"dir": "escape"}, "dir 'escape' is outside jobs.build_root", "params.dir"),  # a link out of the root
        ({"dir": "empty"}, "has no makefile", "params.dir"),
        ({"dir": "nope"}, "is not a directory", "params.dir"),
        ({"target": "all; rm -rf /"}, "'all;' is not a make target name", "params.target"),
        ({"target": "-f /etc/passwd"}, "'-f' is not a make target name", "params.target"),
        ({"target": "CC=/tmp/evil"}, "'CC=/tmp/evil' is not a make target", "params.target"),
        ({"target": "$(shell id)"}, "is not a make target name", "params.target"),
        ({"target": "../../x"}, "is not a make target name", "params.target"),
        ({"cc": "/tmp/evil-gcc"}, "is not a compiler name", "params.cc"),
        ({"cc": "gcc -wrapper"}, "is not a compiler name", "params.cc"),
        ({"hosts": "localhost/4 evil.example:1/4"}, "is not localhost/N or A.B.C.D:PORT/N", "params.hosts"),
        ({"hosts": "localhost/4 --randomize"}, "is not localhost/N", "params.hosts"),
        ({"jobs": 0}, "expected at least 1", "params.jobs"),
        ({"make": "x"}, "unknown parameter 'make'", "params.make"),
    ],
)
def test_the_leader_refuses_bad_input_by_name(
    tmp_path: Path, tree: Path, params: dict[str, Any], message: str, field: str
) -> None:
    with pytest.raises(JobRejected, match=message.replace("(", r"\(").replace("$", r"\$")) as err:
        KIND.prepare(leader(**params), ctx(tmp_path, build_root=str(tree)))
    assert err.value.field == field


def test_a_node_without_a_build_root_leads_no_build(tmp_path: Path) -> None:
    with pytest.raises(JobRejected, match=r"jobs.build_root is not set on this node") as err:
        KIND.prepare(leader(), ctx(tmp_path))
    assert err.value.field == "jobs.build_root"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"allow": "10.0.0.1;reboot", "leader": "10.0.0.1"}, "'10.0.0.1;reboot' is not an IPv4 address"),
        ({"allow": "", "leader": "10.0.0.1"}, "need at least one address"),
        ({"allow": "10.0.0.1", "leader": "10.0.0.1", "port": 80}, "port 80 is privileged"),
        ({"allow": "10.0.0.1"}, "parameter 'leader' is required"),
    ],
)
def test_the_worker_refuses_bad_input_by_name(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    with pytest.raises(JobRejected, match=message):
        KIND.prepare({"role": "worker", **params}, ctx(tmp_path))


def test_the_recorded_client_log_says_where_each_file_compiled() -> None:
    counts, fallbacks = distcc.compiles_by_host((DATA / "jobs" / "distcc-3.4_client.log").read_text())
    # Thirteen files; the link ("compile (null)") is not a compile; the host that refused connections got none.
    assert counts == {"localhost": 8, "127.0.0.1:36322": 5} and fallbacks == 0
    assert distcc.compiles_by_host("") == ({}, 0)


def test_a_log_the_job_swapped_for_a_link_is_never_followed(tmp_path: Path, tree: Path) -> None:
    # The agent is root and the job directory is the job's: a symlink named like the client log must not make the
    # agent count (or report) the lines of a file the job could not read itself.
    secret = tmp_path / "secret"
    secret.write_text("distcc[1] compile f1.c on localhost/4 completed ok\n" * 3)
    lead = ctx(tmp_path, build_root=str(tree))
    prepared = KIND.prepare(leader(), lead)
    (lead.work_dir / distcc.CLIENT_LOG).symlink_to(secret)
    assert KIND.progress(lead, "") == distcc.Progress(None, "building")
    with pytest.raises(JobFailed, match="symbolic link"):
        KIND.lead_result(replace(lead, started=1.0), prepared, "", 0)


def test_progress_counts_compiles_as_the_logs_grow(tmp_path: Path, tree: Path) -> None:
    lead = ctx(tmp_path, build_root=str(tree))
    KIND.prepare(leader(), lead)
    log = (DATA / "jobs" / "distcc-3.4_client.log").read_text()
    half = log.index("compile f3.c on")  # some files compiled before it
    (lead.work_dir / distcc.CLIENT_LOG).write_text(log[:half] + "distcc[1] compile f3.c on local")  # mid-line
    first = KIND.progress(lead, "")
    (lead.work_dir / distcc.CLIENT_LOG).write_text(log)
    assert first is not None and KIND.progress(lead, "") == distcc.Progress(None, "13 files compiled")
    assert first.phase != "13 files compiled"
    worker = JobContext("w1", tmp_path / "w", cores=4, sim=True, cfg=JobsSection())
    worker.work_dir.mkdir()
    (worker.work_dir / distcc.DAEMON_LOG).write_text((DATA / "jobs" / "distccd-3.4_notice.log").read_text())
    assert KIND.progress(worker, "") == distcc.Progress(None, "served 5 compiles")


@given(st.text(max_size=60))
def test_make_targets_accept_only_plain_names(text: str) -> None:
    try:
        words = make_targets(text)
    except ValueError:
        return
    for word in words:
        assert not word.startswith("-") and "=" not in word and ".." not in word.split("/")
        assert all((c.isalnum() and c.isascii()) or c in "_.+/-" for c in word)


@given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=8))
def test_address_lists_round_trip(addresses: list[str]) -> None:
    assert ipv4_list(",".join(addresses)) == list(dict.fromkeys(addresses))


def test_distcc_hosts_are_checked_entry_by_entry() -> None:
    assert distcc_hosts("localhost/4 10.1.2.3:3632/8") == [("localhost", 4), ("10.1.2.3:3632", 8)]
    for bad in ("", "localhost", "10.1.2.300:1/4", "10.1.2.3:70000/4", "10.1.2.3:1/0", "@host/4", "localhost/4,lzo"):
        with pytest.raises(ValueError):
            distcc_hosts(bad)


def test_the_nodes_addresses_from_the_kernels_tables() -> None:
    assert ipv4_from_fib_trie((DATA / "net" / "fib_trie.txt").read_text()) == ["192.0.2.2"]  # no loopback
    assert ipv6_from_if_inet6((DATA / "net" / "if_inet6.txt").read_text()) == ["fd00::2"]  # no ::1, no fe80::
    assert ipv4_from_fib_trie("garbage\n|-- 300.1.1.1\n /32 host LOCAL\n") == []


def test_the_controller_splits_distcc_by_the_roles_the_kind_declares() -> None:
    assert set(distcc.WORKER) == set(jobs.DISTCC_WORKER_KEYS)
    assert set(distcc.LEADER) == set(jobs.DISTCC_LEADER_KEYS)


# --- the controller's plan ---------------------------------------------------------------------------------------
def views(addresses: dict[str, tuple[str, ...]], cores: int = 4) -> dict[str, NodeView]:
    return {
        n: NodeView(n, "online", NodeFacts(n, "0.1", "sim", "m", "s", cores, 4096, addresses=a))
        for n, a in addresses.items()
    }


def test_the_plan_allows_exactly_the_selection_and_sizes_make_from_the_cores() -> None:
    fleet = views({"n1": ("10.0.0.11", "fd00::11"), "n2": ("10.0.0.12",), "n3": ("10.0.0.13", "192.168.1.13")})
    plan = plan_distcc(fleet, "n1", ["n2", "n3"], {"dir": "linux", "target": "Image"})
    assert plan.allow == ["10.0.0.11", "10.0.0.12", "10.0.0.13", "192.168.1.13"]  # IPv4, every selected node
    assert plan.ports == {"n2": 3632, "n3": 3632} and plan.make_jobs == int(12 * JOBS_PER_CORE)
    roles = plan.roles()
    assert roles.worker == {"role": "worker", "allow": ",".join(plan.allow), "leader": "10.0.0.11"}
    assert roles.per_worker == {"n2": {"port": 3632, "slots": 4}, "n3": {"port": 3632, "slots": 4}}
    ready = [{"address": "10.0.0.12:3632"}, {"address": "10.0.0.13:3632"}]
    assert roles.complete(roles.leader, ready) == {
        "role": "leader", "dir": "linux", "target": "Image", "cc": "gcc", "jobs": 24,
        "hosts": "localhost/4 10.0.0.12:3632/4 10.0.0.13:3632/4",
    }  # fmt: skip
    result = {"compiles": {"localhost": 10, "10.0.0.12:3632": 20, "10.0.0.13:3632": 10}, "wall_s": 12.5}
    figures = shares(plan, result, {"n2": ready[0], "n3": ready[1]})
    assert figures["compiles_by_node"] == {"n1": 10, "n2": 20, "n3": 10} and figures["compiles_total"] == 40
    assert figures["shares"] == {"n1": 0.25, "n2": 0.5, "n3": 0.25} and figures["wall_s"] == 12.5


def test_workers_sharing_an_address_get_their_own_ports() -> None:
    fleet = views({"n1": ("10.0.0.1",), "n2": ("10.0.0.1",), "n3": ("10.0.0.1",)})  # simulated nodes on one host
    plan = plan_distcc(fleet, "n1", ["n2", "n3"], {"dir": "d", "port": "5000", "jobs": "7"})
    assert plan.ports == {"n2": 5000, "n3": 5001} and plan.make_jobs == 7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "--set dir=DIR is required"),
        ({"dir": "d", "target": "all; reboot"}, "'all;' is not a make target name"),
        ({"dir": "d", "cc": "/bin/sh"}, "is not a compiler name"),
        ({"dir": "d", "port": "22"}, "port: expected 1024 to 65535"),
        ({"dir": "d", "jobs_per_core": "x"}, "jobs_per_core: expected a number"),
        ({"dir": "d", "hosts": "x"}, "parameter 'hosts' is not one to set"),
    ],
)
def test_the_plan_refuses_bad_input_before_anything_starts(params: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_distcc(views({"n1": ("10.0.0.1",), "n2": ("10.0.0.2",)}), "n1", ["n2"], params)


def test_a_node_without_an_ipv4_address_is_named() -> None:
    with pytest.raises(PlanError, match="node n2 publishes no IPv4 address"):
        plan_distcc(views({"n1": ("10.0.0.1",), "n2": ("fd00::2",)}), "n1", ["n2"], {"dir": "d"})


def test_facts_refuse_addresses_that_are_not_addresses() -> None:
    from nodeagent.errors import ProtocolError
    from nodeagent.protocol import decode, encode

    good = NodeFacts("n1", "0.1", "sim", "m", "s", 4, 4096, addresses=("10.0.0.1", "fd00::1"))
    assert decode(encode(good), NodeFacts).addresses == ("10.0.0.1", "fd00::1")
    bad = NodeFacts("n1", "0.1", "sim", "m", "s", 4, 4096, addresses=("10.0.0.1; reboot",))
    with pytest.raises(ProtocolError, match="expected IP addresses"):
        decode(encode(bad), NodeFacts)


def test_progress_lines_show_the_builds_phase_and_no_hpl_plan() -> None:
    from controller.dispatch import NodeRun
    from controller.report import run_line

    build = NodeRun("n1", state="accepted", plan={"role": "leader", "dir": "/srv/b/proj", "jobs": 24, "cc": "gcc"})
    assert run_line(build) == "n1: accepted (leader: make -j 24 in /srv/b/proj)"
    assert run_line(NodeRun("n1", state="running", phase="12 files compiled")) == "n1: running (12 files compiled)"
    hpl = NodeRun("n1", state="accepted", plan={"n": 1000, "nb": 96, "p": 1, "q": 2})
    assert run_line(hpl) == "n1: accepted (N=1000 NB=96 P×Q=1x2)"
