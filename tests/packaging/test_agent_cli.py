"""What the unit relies on in ``picluster-agent``'s start-up: journal logging and the ``failsafe`` hook."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent import __main__ as cli


@contextlib.contextmanager
def journal_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """stderr is a file and $JOURNAL_STREAM names it, as systemd sets up for StandardError=journal. (Inside the
    test: pytest puts its own capture back on sys.stderr after fixtures ran.)"""
    with open(tmp_path / "stderr", "w") as err, monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", err)
        st = os.fstat(err.fileno())
        patch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield


def test_journal_handler_sends_node_and_job_id_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if importlib.util.find_spec("systemd") is None:
        pytest.fail("python3-systemd is not importable: run `make test`, which installs it (apt)")
    with journal_stderr(monkeypatch, tmp_path):
        handler = cli.journal_handler("n1")
    assert handler is not None and type(handler).__name__ == "JournalHandler"
    sent: list[tuple[str, dict[str, Any]]] = []
    handler.send = lambda text, /, **fields: sent.append((text, fields))  # type: ignore[attr-defined]
    log = logging.getLogger("picluster.test")
    for msg, args in [("event=job_started job=%s", ("hpl-20261123-1",)), ("event=agent_start node=%s", ("n1",))]:
        handler.handle(log.makeRecord(log.name, logging.WARNING, __file__, 1, msg, args, None))
    (first, f1), (_, f2) = sent
    assert first == "picluster.test event=job_started job=hpl-20261123-1"
    assert f1["NODE"] == "n1" and f1["JOB_ID"] == "hpl-20261123-1" and f1["SYSLOG_IDENTIFIER"] == "picluster-agent"
    assert f1["PRIORITY"] == "4"  # warning: `journalctl -p warning` finds it
    assert "JOB_ID" not in f2 and f2["NODE"] == "n1"


def test_journal_only_when_stderr_is_the_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with journal_stderr(monkeypatch, tmp_path):
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited from a parent whose stderr went to the journal
        assert cli.journal_handler("n1") is None
        monkeypatch.delenv("JOURNAL_STREAM")
        assert cli.journal_handler("n1") is None


def test_failsafe_hands_its_arguments_to_nodeagent_failsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("nodeagent.failsafe")
    fake.main_failsafe = lambda argv: calls.append(list(argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nodeagent.failsafe", fake)
    assert cli.main(["failsafe", "--config", "/etc/picluster/agent.toml", "--help"]) == 3
    assert cli.main(["failsafe"]) == 3
    assert calls == [["--config", "/etc/picluster/agent.toml", "--help"], []]


def test_run_still_rejects_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--sim", "--no-such-option"])
    assert exc.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
