"""Job history and its report formats: a top500-benchmark README row, CSV that parses back, JSON that round-trips;
events stored once by (node, job, seq); an ending is never reopened."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import results
from controller.dispatch import NodeRun
from controller.history import _SCHEMA, SCHEMA_VERSION, History, HistoryError, JobRecord, NodeRecord, default_path
from nodeagent.protocol import Event, JobSpec

# top500-benchmark README, the CM5 row (jobs.md 1.7)
CM5_ROW = (
    "| [Raspberry Pi CM5 (BCM2712)](https://github.com/geerlingguy/top500-benchmark/issues/48) | Arm | "
    "32.152 Gflops | 9.2W | 3.49 Gflops/W |"
)
ROW_RE = re.compile(r"^\| (?P<config>[^|]+) \| (?P<arch>[^|]+) \| (?P<gflops>[\d.]+) Gflops \| (?P<w>[\d.]+)W \| "
                    r"(?P<per_w>\d+\.\d\d) Gflops/W \|$")  # fmt: skip


def _job(
    result: dict[str, Any] | None = None, runs: list[NodeRecord] | None = None, cpu: str = "Cortex-A76"
) -> JobRecord:
    facts = {"n1": {"model": "Raspberry Pi Compute Module 5 Rev 1.0", "cpu": cpu, "board": "compute-blade"}}
    return JobRecord(
        "hpl-1", "blade", "hpl", 1.0, {}, {}, ["n1"], facts, result, runs or [NodeRecord("n1", "finished")]
    )


def test_md_row_is_the_top500_readme_row() -> None:
    job = _job({"gflops": 32.152, "wall_power_avg_w": 9.2, "power_avg_w": 7.0})
    row = results.top500_row(
        job, name="Raspberry Pi CM5 (BCM2712)", link="https://github.com/geerlingguy/top500-benchmark/issues/48"
    )
    assert row == CM5_ROW


@settings(max_examples=200)
@given(st.floats(0.01, 99999.0), st.floats(0.5, 9999.0), st.integers(1, 64))
def test_md_row_always_has_the_five_top500_columns(gflops: float, watts: float, nodes: int) -> None:
    runs = [NodeRecord(f"n{i}", "finished", result={"gflops": gflops / nodes, "passed": True}) for i in range(nodes)]
    job = _job({"power_avg_w": watts}, runs)
    job = JobRecord(**{**job.__dict__, "nodes": [r.node for r in runs]})
    m = ROW_RE.match(results.top500_row(job))
    assert m, results.top500_row(job)
    assert float(m["gflops"]) == pytest.approx(gflops, rel=1e-4)
    assert float(m["w"]) == pytest.approx(watts, rel=1e-2)
    assert m["arch"] == "Arm" and (nodes == 1 or f"({nodes}x " in m["config"])


def test_md_row_without_power_says_so_and_sums_the_nodes_that_passed() -> None:
    runs = [
        NodeRecord("n1", "finished", result={"gflops": 30.0, "passed": True}),
        NodeRecord("n2", "finished", result={"gflops": 5.0, "passed": False}),
        NodeRecord("n3", "offline"),
    ]
    job = JobRecord("j", "c", "hpl", 1.0, {}, {}, ["n1", "n2", "n3"], {}, None, runs)
    assert results.top500_row(job, arch="x86") == "| c (3x node) | x86 | 30 Gflops | - | - |"
    assert job.state == "finished,offline"


def test_significant_digits_as_top500_writes_them() -> None:
    assert [results.significant(v, 5) for v in (324.66, 11.433, 60.293, 112.25)] == [
        "324.66", "11.433", "60.293", "112.25",
    ]  # fmt: skip
    assert [results.significant(v, 3) for v in (132.0, 69.5, 11.0, 12.7, 1320.4)] == [
        "132",
        "69.5",
        "11",
        "12.7",
        "1320",
    ]


def _stored(tmp_path: Path) -> tuple[History, JobRecord]:
    history = History(tmp_path / "h.sqlite3")
    job = JobSpec(id="hpl-x", kind="hpl", node_params={"n1": {"n": 1000}, "n2": {"n": 1000}})
    history.job_started(job, "c", ["n1", "n2"], {"n1": {"n": 1000}, "n2": {"n": 1000}}, {"n1": {"cpu": "Cortex-A76"}})
    r1 = {"gflops": 31.5, "n": 1000, "passed": True, "residual": 0.0031, "variant": "WR11C2R4", "forced_reasons": []}
    r2 = {"gflops": 30.25, "n": 1000, "passed": True, "throttled": {"n2": False}, "nodes": ["n2"], "note": 'a,b "c"'}
    for node, result in (("n1", r1), ("n2", r2)):
        history.record_event(Event(node=node, seq=1, t=1.0, kind="accepted", job="hpl-x", data={"plan": {"n": 1000}}))
        history.record_event(Event(node=node, seq=2, t=2.0, kind="finished", job="hpl-x", result=result))
    history.set_result("hpl-x", {"gflops": 61.75, "wall_power_avg_w": 20.5, "wall_gflops_per_w": 3.0122})
    stored = history.job("hpl-x")
    assert stored is not None
    return history, stored


def test_json_round_trips(tmp_path: Path) -> None:
    history, job = _stored(tmp_path)
    assert json.loads(results.to_json(job)) == job.to_dict()
    assert job.state == "passed" and results.job_gflops(job) == 61.75
    history.close()
    again = History(tmp_path / "h.sqlite3")
    assert again.job("hpl-x") == job  # what a later piclusterctl reads back is what was stored
    again.close()


def test_csv_parses_back(tmp_path: Path) -> None:
    history, job = _stored(tmp_path)
    rows = list(csv.DictReader(io.StringIO(results.to_csv(job))))
    assert [r["node"] for r in rows] == ["(job)", "n1", "n2"]
    for row, result in zip(rows, [job.result, *(r.result for r in job.runs)], strict=True):
        assert result is not None
        back = {k: (v if k in ("note", "variant") else json.loads(v)) for k, v in row.items() if k in result}
        assert back == {k: v for k, v in result.items()}
        assert all(row[k] == "" for k in row if k not in result and k not in ("job", "node", "state", "reason"))
    history.close()


def test_events_are_stored_once_and_an_ending_is_never_reopened(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite3")
    finished = Event(node="n1", seq=7, t=5.0, kind="finished", job="j1", result={"gflops": 1.0, "passed": True})
    late = Event(node="n1", seq=6, t=4.0, kind="progress", job="j1", progress=0.5)
    dup = Event(node="n1", seq=8, t=6.0, kind="rejected", job="j1", field="job.id", data={"duplicate": True})
    assert history.record_event(finished) and not history.record_event(finished)
    assert history.record_event(late) and history.record_event(dup)
    history.node_ended("j1", "n1", "offline", "the node went offline")
    job = history.job("j1")
    assert job is not None and job.runs == [NodeRecord("n1", "finished", "", {}, {"gflops": 1.0, "passed": True})]
    assert [e["seq"] for e in history.events("j1")] == [6, 7, 8]
    assert job.kind == "j1" and job.nodes == ["n1"]  # a job another controller started, known from its events
    history.close()


def test_history_location_follows_xdg_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    assert default_path({"XDG_DATA_HOME": "/x"}) == Path("/x/picluster/history.sqlite3")
    assert default_path({"PICLUSTER_HISTORY": "/y/h.db", "XDG_DATA_HOME": "/x"}) == Path("/y/h.db")
    assert str(default_path({"HOME": "/home/op"})).endswith(".local/share/picluster/history.sqlite3")
    history = History(tmp_path / "h.sqlite3")
    history._db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    history.close()
    with pytest.raises(HistoryError, match="newer than this piclusterctl"):
        History(tmp_path / "h.sqlite3")
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database" * 200)
    with pytest.raises(HistoryError, match="--history"):
        History(tmp_path / "junk.sqlite3")


def test_every_run_prints_and_stores_one_result_shape() -> None:
    """Per-node and cluster results have the same keys; a per-node HPL job's gflops is the passed nodes' sum."""
    ok = NodeRun("n1", state="finished", result={"gflops": 30.0, "passed": True})
    bad = NodeRun("n2", state="finished", result={"gflops": 29.0, "passed": False})
    per_node = results.job_result("hpl-1", "hpl", "per-node", [ok, bad])
    cluster = results.job_result("hpl-2", "hpl", "cluster", [ok, ok], state="finished", gflops=55.5, passed=True)
    shape = {"job", "kind", "mode", "state", "passed", "nodes", "runs", "gflops"}
    assert set(per_node) == set(cluster) == shape
    assert per_node["gflops"] == 30.0 and not per_node["passed"] and per_node["state"] == "finished"
    assert cluster["state"] == "passed" and cluster["nodes"] == ["n1", "n1"] and cluster["runs"][0]["node"] == "n1"
    failed = results.job_result("hpl-3", "hpl", "cluster", [ok], state="failed", passed=False)
    assert failed["state"] == "failed"


def test_a_version_1_history_is_migrated_to_the_one_shape(tmp_path: Path) -> None:
    """piclusterctl before the one result shape stored per-node HPL's sum as total_gflops: read it as gflops."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    old = {"kind": "hpl", "passed": True, "total_gflops": 61.75}
    cluster = {"kind": "hpl", "mode": "cluster", "gflops": 9.5, "leader": "n1"}
    for job_id, result in (("hpl-old", old), ("hpl-cluster", cluster)):
        db.execute(
            "INSERT INTO jobs VALUES (?, 'c', 'hpl', 1.0, '{}', '{}', '[\"n1\"]', '{}', ?)",
            (job_id, json.dumps(result)),
        )
    db.commit()
    db.close()
    migrated = History(path)
    job = migrated.job("hpl-old")
    assert job is not None and job.result == {"kind": "hpl", "passed": True, "gflops": 61.75, "mode": "per-node"}
    assert results.job_gflops(job) == 61.75
    again = migrated.job("hpl-cluster")
    assert again is not None and again.result == cluster
    migrated.close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)


def test_a_nodes_own_word_replaces_what_the_controller_concluded_when_it_was_silent(tmp_path: Path) -> None:
    """offline, no-answer and timeout are the controller's guesses: the node's own events, coming late (after a
    broker crash, through resend), replace them; its verdicts stand."""
    history = History(tmp_path / "h.sqlite3")
    history.job_started(JobSpec(id="j1", kind="hpl"), "c", ["n1", "n2"], {})
    history.node_ended("j1", "n1", "offline", "the node went offline during the job")
    history.node_ended("j1", "n2", "no-answer", "the agent did not answer within 15 s")
    orphan = "the agent stopped unexpectedly (killed or crashed) before this job ended"
    history.record_event(Event(node="n1", seq=4, t=1.0, kind="failed", job="j1", reason=orphan))
    history.record_event(Event(node="n2", seq=9, t=1.0, kind="started", job="j1"))
    job = history.job("j1")
    assert job is not None and [(r.state, r.reason) for r in job.runs] == [("failed", orphan), ("running", "")]
    history.node_ended("j1", "n1", "timeout", "no result before the job's timeout")
    history.record_event(Event(node="n2", seq=10, t=2.0, kind="finished", job="j1", result={"passed": True}))
    history.node_ended("j1", "n2", "offline", "the node went offline during the job")
    job = history.job("j1")
    assert job is not None and [r.state for r in job.runs] == ["failed", "finished"]
    history.close()
