"""Issue 12, finding 2: "With --sim and no picluster user, every job runs as root."

Replayed on real simulated agents: a missing jobs user refuses the job with the fix, in ``--sim`` too; ``jobs.user =
"root"`` is a configuration error naming why; an existing unprivileged user runs the job as itself. Whatever the
configuration, the runner never starts a job as uid 0.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from nodeagent.config import JobsSection, from_mapping
from nodeagent.errors import ConfigError, JobRejected
from nodeagent.jobs import runner as runner_module
from nodeagent.jobs.runner import Runner
from nodeagent.protocol import Command, Event, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.waits import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only an agent running as root switches to the jobs user")

WHOAMI = """
[[jobs.template]]
name = "whoami"
argv = ["/bin/sh", "-c", "id -u; id -g; grep -E '^(Uid|Gid|Groups|CapPrm|CapEff|CapAmb):' /proc/self/status"]
heavy = false
"""


def run(w: Watcher, node: str, job_id: str) -> Event:
    w.publish(w.topics.node_cmd(node), encode(Command(id=job_id, cmd="run", job=JobSpec(id=job_id, kind="whoami"))))
    return w.wait(f"{job_id}'s end", lambda: next((e for e in w.events(node, job_id) if e.terminal), None), 30)


def test_a_missing_jobs_user_refuses_the_job_with_the_fix_in_sim_too(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=WHOAMI, jobs_user="picluster-no-such-user")
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        end = run(w, "n1", "as-missing")
    assert end.kind == "rejected" and end.field == "jobs.user", end
    assert "does not exist and jobs never run as root" in end.reason
    assert "adduser --system --group picluster-no-such-user" in end.reason
    assert [e.kind for e in w.events("n1", "as-missing")] == ["rejected"]  # never accepted, never started
    assert not (agents.tmp_path / "n1" / "jobs" / "as-missing").exists()


def test_an_unprivileged_jobs_user_runs_the_job_as_itself(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config=WHOAMI, jobs_user="nobody")
    nobody = pwd.getpwnam("nobody")
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        end = run(w, "n1", "as-nobody")
    assert end.kind == "finished", end
    uid, gid, *status = end.result["output_tail"]
    assert [uid, gid] == [str(nobody.pw_uid), str(nobody.pw_gid)]
    fields = {line.split(":")[0]: line.split(":", 1)[1].split() for line in status}
    # Real, effective, saved and filesystem ids all the user's (no way back to root), no supplementary group,
    # no capability left: whichever way the runner switched (setpriv, or Popen's own).
    assert fields["Uid"] == [str(nobody.pw_uid)] * 4 and fields["Gid"] == [str(nobody.pw_gid)] * 4, fields
    assert fields["Groups"] == [] and {int(fields[c][0], 16) for c in ("CapPrm", "CapEff", "CapAmb")} == {0}


def test_root_as_the_jobs_user_is_a_configuration_error_and_the_agent_does_not_start(
    agents: AgentFactory, broker: Mosquitto
) -> None:
    agent = agents.start("n1", config=WHOAMI, jobs_user="root")
    assert agent.proc.wait(30) == 2
    out = agent.output()
    assert "jobs.user: 'root' has uid 0 and group 0: jobs never run as root" in out, out
    assert "adduser --system --group picluster" in out


@pytest.mark.parametrize("user", ["root", ""])
def test_the_config_refuses_root_by_name_uid_or_an_empty_name(user: str) -> None:
    with pytest.raises(ConfigError, match=r"agent.toml: jobs.user: .*jobs never run as root"):
        from_mapping({"jobs": {"user": user}}, "agent.toml")


@pytest.mark.parametrize("sim", [True, False])
def test_a_runner_handed_root_anyway_refuses_every_job(tmp_path: Path, sim: bool) -> None:
    """The runner's own check, for a config built past the loader (a bug, a test): uid 0 never runs a job."""
    events: list[str] = []
    runner = Runner(
        JobsSection(user="root"), tmp_path, cores=2, sim=sim, emit=lambda kind, *a, **k: events.append(kind)
    )
    with pytest.raises(JobRejected, match="has uid 0 and group 0: jobs never run as root") as err:
        runner.submit(JobSpec(id="r1", kind="hpl"), {"n": 200, "nb": 32, "p": 1, "q": 1}, accepted=lambda d: None)
    assert err.value.field == "jobs.user" and events == [] and not (tmp_path / "r1").exists()
    wait_until("no job process", lambda: None, lambda: runner.running == (), 1)


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "popen-switch"])
def test_both_ways_of_switching_leave_no_root_id_group_or_capability(
    setpriv: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not setpriv:
        monkeypatch.setattr(runner_module.shutil, "which", lambda name: None)  # a machine without util-linux's
    argv, kwargs = runner_module._as_user(("grep", "-E", "^(Uid|Gid|Groups|CapEff):", "/proc/self/status"), "nobody")
    assert (argv[0].endswith("/setpriv") and not kwargs) if setpriv else ("user" in kwargs and argv[0] == "grep")
    out = subprocess.run(argv, capture_output=True, text=True, check=True, **kwargs).stdout
    fields = {line.split(":")[0]: line.split(":", 1)[1].split() for line in out.splitlines()}
    nobody = pwd.getpwnam("nobody")
    assert fields == {
        "Uid": [str(nobody.pw_uid)] * 4,
        "Gid": [str(nobody.pw_gid)] * 4,
        "Groups": [],
        "CapEff": ["0000000000000000"],
    }
