"""Issue 12, finding 2: "With --sim and no picluster user, every job runs as root."

Replayed on real simulated agents: a missing jobs user refuses the job with the fix, in ``--sim`` too; ``jobs.user =
"root"`` is a configuration error naming why; an existing unprivileged user runs the job as itself. Whatever the
configuration, the runner never starts a job as uid 0.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from nodeagent.config import JobsSection, from_mapping
from nodeagent.errors import ConfigError, JobRejected
from nodeagent.jobs.runner import Runner
from nodeagent.protocol import Command, Event, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.waits import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only an agent running as root switches to the jobs user")

WHOAMI = '[[jobs.template]]\nname = "whoami"\nargv = ["/bin/sh", "-c", "id -u; id -g"]\nheavy = false\n'


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
    assert end.result["output_tail"] == [str(nobody.pw_uid), str(nobody.pw_gid)]


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
