"""Issue 12, finding 5 (its control-file half): "the root agent ... writes launch.json.tmp in directories the job
user owns". A member's ``member.json`` (its leader and the leader's key) and ``launch.json`` (the daemon line) now
live in the agent's control directory, which the job can read and not write; links the job plants in its own
directory under those names lead nowhere. (output.log and O_NOFOLLOW in the runner are the other half.)"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from nodeagent.protocol import Command, JobSpec, encode
from nodeagent.security.keys import SigningKey
from nodeagent.security.seal import seal
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.mpi_recorded import member_line, value
from tests.signing import OperatorKey

pytestmark = pytest.mark.slow

LAUNCHER = f"{sys.executable} -m nodeagent.mpi.launcher"


def owned_by_root_and_read_only_for_others(path: Path) -> bool:
    st = path.lstat()
    return st.st_uid == os.geteuid() and not stat.S_IMODE(st.st_mode) & 0o022 and not stat.S_ISLNK(st.st_mode)


def test_a_members_control_files_are_out_of_its_jobs_reach(
    agents: AgentFactory, broker: Mosquitto, cluster: str, operator: OperatorKey, tmp_path: Path
) -> None:
    agents.start("node2", config=f'[mpi]\nlaunch_agent = "{LAUNCHER}"\nlaunch_timeout_s = 60\n' + operator.config())
    leader = SigningKey.generate("node1")
    params = {"role": "member", "leader": "node1", "leader_key": leader.public.b64}
    job = JobSpec(id="j-ctl", kind="hpl", node_params={"node2": params}, timeout_s=120)
    job_dir, control = agents.tmp_path / "node2" / "jobs" / "j-ctl", agents.tmp_path / "node2" / "control" / "j-ctl"
    victims = {name: tmp_path / f"victim-{name}" for name in ("launch.json", "launch.json.tmp", "member.json")}
    line = member_line(LAUNCHER, hnp=f"{value(member_line(LAUNCHER), 'ess_base_jobid')}.0;tcp://127.0.0.1:9")
    with Watcher(broker.url, cluster) as w:
        w.wait("node2 online", lambda: w.online("node2"))
        w.command(w.topics.node_cmd("node2"), Command(id="j-ctl", cmd="run", job=job))
        w.wait("the member holding", lambda: any(e.kind == "started" for e in w.events("node2", "j-ctl")))
        for name, victim in victims.items():  # what a hostile job can do in its own directory
            (job_dir / name).unlink(missing_ok=True)
            (job_dir / name).symlink_to(victim)
        topic = w.topics.launch("node2", "node1")
        launch = Command(id="j-ctl.launch-1", cmd="launch", job_id="j-ctl", argv=tuple(line), sender="node1")
        w.publish(topic, seal(leader, topic, encode(launch)))  # the leader's agent, signing with its key
        (answer,) = w.wait("the launch answered", lambda: w.events("node2", "j-ctl.launch-1"))
        w.wait("the job's end", lambda: any(e.terminal for e in w.events("node2", "j-ctl")), timeout_s=90)
    assert answer.kind == "accepted", answer.reason
    assert not any(v.exists() for v in victims.values())  # nothing was written through the job's links
    for path in (control.parent, control, control / "member.json", control / "launch.json"):
        assert owned_by_root_and_read_only_for_others(path), path
    assert json.loads((control / "member.json").read_text()) == {"leader": "node1", "key": leader.public.b64}
    assert json.loads((control / "launch.json").read_text())["argv"][0] == "orted"
