"""What the operator reads never says ``None``: every event kind's line, from the plans the real job kinds make.

The plans come from the kinds' own ``prepare`` (HPL alone, a cluster HPL's leader and member, stress, llama-bench,
llama-rpc, dllama and distcc in both roles, a template), travel as real encoded events through the controller's
``Follower``, and are printed by the same functions piclusterctl prints with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import pytest

from controller.dispatch import Follower, NodeRun
from controller.fleet import Fleet
from controller.report import Table, hpl_results_table, nodes_table, plan_summary, run_line
from controller.results import job_result
from controller.run_kinds import _print as print_run_kinds
from controller.session import Received
from nodeagent.config import JobsSection, MpiSection
from nodeagent.jobs.kind import JobContext
from nodeagent.jobs.kinds import KINDS, DllamaKind, LlamaBenchKind, LlamaRpcKind, StressKind
from nodeagent.jobs.kinds.template import TemplateKind
from nodeagent.jobs.template_config import JobTemplate
from nodeagent.mpi.cluster_kind import ClusterHplKind
from nodeagent.mpi.control import ControlDir
from nodeagent.mpi.leaders import Leaders
from nodeagent.protocol import OFFLINE, ONLINE, Event, NodeFacts, Telemetry, Topics, encode
from nodeagent.protocol.messages import EventKind

T = Topics("c")


def plans(tmp_path: Path) -> dict[str, Mapping[str, Any]]:
    """What each kind's ``prepare`` puts in the accepted event's plan."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    (tmp_path / "tok.t").write_bytes(b"t")

    def ctx(job: str, **cfg: Any) -> JobContext:
        (tmp_path / job).mkdir()
        return JobContext(job, tmp_path / job, cores=4, sim=True, cfg=JobsSection(**cfg))

    build = tmp_path / "build"
    (build / "proj").mkdir(parents=True)
    (build / "proj" / "Makefile").write_text("all:\n")
    leaders = Leaders(opener=lambda: tmp_path / "launch.sock")  # where the agent would listen for the launcher
    hpl = ClusterHplKind(MpiSection(), control=ControlDir(tmp_path / "control"), leaders=leaders)
    leader = {"role": "leader", "n": 5888, "nb": 128, "p": 1, "q": 2, "ranks_per_node": 1, "hosts": "sim1,sim2"}
    template = TemplateKind(JobTemplate("light", ("true",)))
    out = {
        "hpl": hpl.prepare({"n": 2000, "nb": 128, "p": 1, "q": 1}, ctx("hpl")),
        "hpl-leader": hpl.prepare(leader, ctx("lead")),
        "hpl-member": hpl.prepare({"role": "member", "leader": "sim1"}, ctx("member")),
        "stress": StressKind().prepare({"duration_s": 5}, ctx("stress")),
        "llama-bench": LlamaBenchKind().prepare({"model": str(model)}, ctx("bench")),
        "llama-rpc-worker": LlamaRpcKind().prepare({"role": "worker"}, ctx("rpcw")),
        "llama-rpc-leader": LlamaRpcKind().prepare(
            {"role": "leader", "model": str(model), "rpc": "h1:50052"}, ctx("rpcl")
        ),
        "dllama-worker": DllamaKind().prepare({"role": "worker"}, ctx("dw")),
        "dllama-root": DllamaKind().prepare(
            {"role": "root", "model": str(model), "tokenizer": str(tmp_path / "tok.t"), "workers": "h1:9999"},
            ctx("dr"),
        ),
        "template": template.prepare({}, ctx("tpl")),
        "distcc-worker": KINDS["distcc"].prepare(
            {"role": "worker", "allow": "10.0.0.11,10.0.0.12", "leader": "10.0.0.11"}, ctx("ccw")
        ),
        "distcc-leader": KINDS["distcc"].prepare(
            {"role": "leader", "dir": "proj", "jobs": 16, "hosts": "localhost/4 10.0.0.12:3632/4"},
            ctx("ccl", build_root=str(build)),
        ),
    }
    return {name: dict(p.plan) for name, p in out.items()}


def ev(seq: int, kind: str, **fields: Any) -> Received:
    return Received(T.events("n1"), encode(Event(node="n1", seq=seq, t=0.0, kind=kind, job="j1", **fields)), False)


def render(table: Any) -> str:
    return str(table) + "\n"


# One realistic event of every kind the protocol has, in a job's order (rejected/failed/cancelled end it).
LIFECYCLE: list[tuple[str, dict[str, Any]]] = [
    ("queued", {"data": {"position": 1}}),
    ("started", {}),
    ("ready", {"data": {"address": "h1:50052", "port": 50052}}),
    ("progress", {"progress": 0.5, "phase": "HPL"}),
    ("progress", {"progress": None, "phase": "MPI daemon running"}),
    ("log", {"message": "a line of output", "data": {"stream": "output"}}),
    ("alert", {"message": "nvme0: temperature 71 °C"}),
]
ENDINGS: list[tuple[str, dict[str, Any]]] = [
    ("finished", {"result": {"passed": True, "gflops": 3.2, "n": 2000, "nb": 128, "p": 1, "q": 1, "time_s": 1.7}}),
    ("finished", {"result": {"passed": True, "role": "member"}}),
    ("failed", {"reason": "hpcc exited with status 1"}),
    ("rejected", {"reason": "busy with job j0", "field": "job_id"}),
    ("cancelled", {"reason": "cancelled by the operator"}),
]


def test_every_event_kind_is_in_the_lifecycle_rendered_here() -> None:
    covered = {k for k, _ in [("accepted", {}), *LIFECYCLE, *ENDINGS]}
    assert covered == set(get_args(EventKind))


@pytest.mark.parametrize("ending", range(len(ENDINGS)))
def test_no_line_of_any_kind_says_none(tmp_path: Path, ending: int) -> None:
    lines, runs = [], []
    for name, plan in plans(tmp_path).items():
        f = Follower(T, "j1", ["n1"], started=0.0, timeout_s=60.0)
        seq = 1
        for kind, fields in [("accepted", {"data": {"plan": plan, "forced_reasons": []}}), *LIFECYCLE]:
            f.apply(ev(seq, kind, **fields))
            lines.append(f"{name}/{kind}: {run_line(f.runs['n1'])}")
            seq += 1
        kind, fields = ENDINGS[ending]
        f.apply(ev(seq, kind, **fields))
        lines.append(f"{name}/{kind}: {run_line(f.runs['n1'])}")
        runs.append(f.runs["n1"])
    lines += [run_line(NodeRun("n2", state=s)) for s in ("submitted", "no-answer", "offline", "timeout")]
    table, _ = hpl_results_table(runs)
    text = "\n".join(lines) + render(table)
    assert "None" not in text, text


def test_a_member_says_whose_run_it_joins(tmp_path: Path) -> None:
    p = plans(tmp_path)
    assert plan_summary(p["hpl-member"]) == "member of sim1's run"
    assert plan_summary(p["hpl"]) == "N=2000 NB=128 P×Q=1x1"
    assert plan_summary(p["hpl-leader"]) == "leader: N=5888 NB=128 P×Q=1x2 over 2 nodes"
    assert plan_summary(p["template"]) == "template light"
    assert plan_summary(p["dllama-root"]) == "root of 2 nodes"
    assert plan_summary(p["llama-rpc-worker"]).startswith("worker, serving on ")
    assert plan_summary({"n": None, "nb": None, "p": None, "q": None}) == ""
    assert plan_summary(p["distcc-leader"]) == f"leader: make -j 16 in {tmp_path / 'build' / 'proj'}"
    assert plan_summary(p["distcc-worker"]).startswith("worker, serving on ")  # this host's route to the leader
    assert plan_summary(p["distcc-worker"]).endswith(":3632")


def test_the_run_kinds_table_says_no_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        NodeRun("n1", state="finished", result={"passed": True, "returncode": 0, "output_tail": []}),
        NodeRun("n2", state="failed", reason="true exited with status 1"),
        NodeRun("n3", state="finished", result={"passed": True, "gen_tps": None, "prompt_tps": 12.5}),
    ]
    summary = {"temp_peak_by_node": {"n1": 61.5, "n2": None}, "compiles_by_node": {"n1": 30}, "shares": {"n1": 0.8}}
    for kind in ("light", "stress", "llama-bench", "dllama", "distcc"):
        print_run_kinds(job_result("j1", kind, "per-node", runs, passed=False, **summary), runs, as_json=False)
    out = capsys.readouterr().out
    assert "None" not in out
    assert "61.5" in out and "80%" in out  # the peak temperature and a build's share, from the job's figures


def test_a_node_whose_first_report_has_not_come_says_so() -> None:
    fleet = Fleet(T)
    facts = NodeFacts(node="n1", board="sim", cores=4, memory_mb=4096, agent_version="0.1.0", model="sim", serial="s")
    for node in ("n1", "n2"):
        fleet.update(Received(T.status(node), ONLINE.encode(), True))
        fleet.update(Received(T.facts(node), encode(facts), True))
    fleet.update(Received(T.telemetry("n2"), encode(Telemetry(node="n2", seq=1, t=99.0, temp_c=41.0)), True))
    fleet.update(Received(T.status("n3"), OFFLINE.encode(), True))
    rows = {line.split()[0]: line for line in render(nodes_table(fleet.sorted(), now=100.0)).splitlines()[1:]}
    assert "waiting for first report" in rows["n1"]
    assert "waiting for first report" not in rows["n2"] and "41.0°C" in rows["n2"]
    assert "waiting for first report" not in rows["n3"]  # offline: nothing is coming
    assert "None" not in "".join(rows.values())


def test_a_table_aligns_its_columns_and_prints_text_as_it_is() -> None:
    t = Table("NODE", "TEMP", "NOTE", right=("TEMP",))
    t.add_row("node1", "41.0°C", "unknown node(s) node[5-6]")  # no markup language eats the brackets
    t.add_row("node10", "7.5°C", "")
    t.add_row("ノード", "-", "two\nlines")  # wide characters take two columns; a cell stays on its row
    assert str(t).splitlines() == [
        "NODE      TEMP  NOTE",
        "node1   41.0°C  unknown node(s) node[5-6]",
        "node10   7.5°C",
        "ノード       -  two lines",
    ]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        t.add_row("a", "b")


def test_an_ended_run_does_not_repeat_its_last_progress() -> None:
    f = Follower(T, "j1", ["n1"], started=0.0, timeout_s=60.0)
    f.apply(ev(1, "accepted", data={"plan": {"role": "member", "leader": "sim1"}}))
    f.apply(ev(2, "progress", progress=None, phase="MPI daemon running"))
    assert run_line(f.runs["n1"]) == "n1: running (MPI daemon running)"
    f.apply(ev(3, "finished", result={"passed": True, "role": "member"}))
    assert run_line(f.runs["n1"]) == "n1: finished"
