"""Issue 12, finding 7 (its first half): "The hpl kind ignores undeclared parameters (params.py says they are refused);
p=q=1000 plans 1,000,000 ranks."

Replayed through piclusterctl (its planner refuses) and straight to a node (which refuses by itself: a request need
not come from the planner), each refusal naming the field and the fix, with nothing started. The other half (light
jobs: health gate, power budget, ``jobs.light_max``) is wired into the runner in a later change; the pure check is
in nodeagent/jobs/limits.py and tested in tests/unit/test_job_limits.py.
"""

from __future__ import annotations

import pytest

from nodeagent.protocol import Command, JobSpec, encode
from tests.conftest import AgentFactory, Mosquitto, ctl
from tests.integration.helpers import Watcher

pytestmark = pytest.mark.slow

HPL = {"n": 1000, "nb": 100, "p": 1, "q": 1}


def test_piclusterctl_refuses_a_million_ranks_before_sending_anything(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1")
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
    for nodes in ("n1", "n[1-1]"):
        proc = ctl(broker, cluster, "run", "hpl", "--nodes", nodes, "--param", "p=1000", "--param", "q=1000")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "a 1000 x 1000 grid is 1000000 MPI ranks" in proc.stderr and "p x q must equal the ranks" in proc.stderr
    over = ctl(
        broker, cluster, "run", "hpl", "--nodes", "n1", "--param", "ranks_per_node=64", "--param", "oversubscribe=true"
    )
    assert over.returncode == 2 and "at most 4 per core even with oversubscribe=true" in over.stderr, over.stderr


def test_a_node_refuses_forged_requests_itself_naming_the_field(
    agents: AgentFactory, broker: Mosquitto, cluster: str
) -> None:
    agents.start("n1", config='[mpi]\nlaunch_agent = "true"\n')
    forged = {
        "j-million": ({**HPL, "p": 1000, "q": 1000}, {}, "a 1000 x 1000 grid puts 1000000 MPI ranks", "params.p"),
        "j-typo": ({**HPL, "ranks_per_nod": 2}, {}, "hpl: unknown parameter 'ranks_per_nod'", "params.ranks_per_nod"),
        "j-leader": (
            {**HPL, "p": 1000, "q": 1000, "ranks_per_node": 1},
            {"n1": {"role": "leader", "hosts": "n1,n2"}},
            "p x q must equal the ranks",
            "params.p",
        ),
        "j-member": (
            {**HPL, "ranks_per_node": 1000},
            {"n1": {"role": "member", "leader": "n2"}},
            "the leader's ranks_per_node puts 1000 MPI ranks on this node",
            "params.ranks_per_node",
        ),
        "j-over": ({**HPL, "p": 20, "q": 1, "oversubscribe": True}, {}, "at most 4 per core", "params.p"),
    }
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        for job_id, (params, per_node, _, _) in forged.items():
            job = JobSpec(id=job_id, kind="hpl", params=params, node_params=per_node, force=True)
            w.publish(w.topics.node_cmd("n1"), encode(Command(id=job_id, cmd="run", job=job)))
        w.wait("every answer", lambda: all(w.events("n1", j) for j in forged))
        w.pump(1.0)
    for job_id, (_, _, why, field) in forged.items():
        events = w.events("n1", job_id)
        assert [e.kind for e in events] == ["rejected"], (job_id, events)
        assert why in events[0].reason and events[0].field == field, (job_id, events[0])
        assert not (agents.tmp_path / "n1" / "jobs" / job_id / "hpccinf.txt").exists()
