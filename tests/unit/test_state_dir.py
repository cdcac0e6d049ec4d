"""One state directory, one agent (nodeagent/state.py): where each node's state goes, and the lock on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.__main__ import lock_state_dir, main
from nodeagent.config import from_mapping
from nodeagent.state import LOCK_NAME, StateDirBusy, StateLock, read_holder, state_dir_for, state_root


def test_a_configured_state_dir_is_used_as_it_is_even_for_a_simulated_node() -> None:
    assert state_dir_for("/srv/n1", "n1", sim=True, env={}) == Path("/srv/n1")
    assert state_dir_for("/srv/n1", "n1", sim=False, env={"STATE_DIRECTORY": "/x"}) == Path("/srv/n1")


def test_the_default_is_systemds_state_directory_else_var_lib_and_per_node_for_a_simulated_one() -> None:
    assert state_dir_for("", "node1", sim=False, env={}) == Path("/var/lib/picluster")
    assert state_dir_for("", "sim1", sim=True, env={}) == Path("/var/lib/picluster/sim/sim1")
    env = {"STATE_DIRECTORY": "/run/x/picluster:/run/x/other"}  # systemd lists every StateDirectory=
    assert state_root(env) == Path("/run/x/picluster")
    assert state_dir_for("", "sim2", sim=True, env=env) == Path("/run/x/picluster/sim/sim2")


def test_everything_of_a_simulated_node_follows_its_own_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/tmp/root")
    sim = from_mapping({"agent": {"node_id": "sim3"}, "hardware": {"backend": "sim"}})
    assert sim.state_dir == Path("/tmp/root/sim/sim3") and sim.work_dir == Path("/tmp/root/sim/sim3/jobs")
    real = from_mapping({"agent": {"node_id": "n1"}})
    assert real.state_dir == Path("/tmp/root") and real.work_dir == Path("/tmp/root/jobs")
    own = from_mapping({"agent": {"node_id": "n1", "state_dir": "/srv/s"}, "jobs": {"work_dir": "/srv/j"}})
    assert own.state_dir == Path("/srv/s") and own.work_dir == Path("/srv/j")


def test_a_second_holder_is_refused_and_told_who_holds_it_and_the_fix(tmp_path: Path) -> None:
    with StateLock.acquire(tmp_path / "s", "sim1") as first:
        assert first.held and (tmp_path / "s" / LOCK_NAME).read_text() == f"node=sim1 pid={os.getpid()}\n"
        with pytest.raises(StateDirBusy) as busy:  # a second open file in the same process conflicts too
            StateLock.acquire(tmp_path / "s", "sim2")
    text = str(busy.value)
    assert f"state directory {tmp_path / 's'} is in use by another agent (node sim1, pid {os.getpid()})" in text
    assert "--state-dir DIR" in text and "agent.state_dir" in text
    assert busy.value.holder == {"node": "sim1", "pid": str(os.getpid())}
    with StateLock.acquire(tmp_path / "s", "sim2") as again:  # released: the next agent gets it
        assert again.held
    assert not again.held and (tmp_path / "s" / LOCK_NAME).read_text() == ""


def test_a_link_in_place_of_the_lock_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OSError):
        StateLock.acquire(tmp_path / "s", "n1")
    assert victim.read_text() == "keep me"


@given(st.binary(max_size=2048))
def test_whatever_a_lock_file_says_the_holder_reads_short_and_printable(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("h") / LOCK_NAME
    path.write_bytes(data)
    holder = read_holder(path)
    assert set(holder) <= {"node", "pid"}
    assert all(len(v) <= 64 and v.isprintable() for v in holder.values())
    StateDirBusy(path.parent, holder)  # the message renders whatever it says


def test_the_agent_exits_2_when_its_state_dir_is_held(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with StateLock.acquire(tmp_path, "other", pid=4242):
        code = main(["run", "--sim", "--node-id", "n1", "--state-dir", str(tmp_path), "--broker", "mqtt://127.0.0.1:1"])
    assert code == 2
    assert "in use by another agent (node other, pid 4242)" in capsys.readouterr().err


def test_an_unusable_state_dir_is_logged_and_the_agent_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("where the directory should be")
    cfg = from_mapping({"agent": {"node_id": "n1", "state_dir": str(blocker / "sub")}, "hardware": {"backend": "sim"}})
    assert lock_state_dir(cfg) is None  # the node's safety never depends on its disk
    assert "event=state_dir_unusable" in caplog.text and str(blocker / "sub") in caplog.text
    assert "--state-dir" in caplog.text
