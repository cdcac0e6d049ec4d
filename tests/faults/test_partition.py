"""A network partition during a cluster HPL: one member's traffic is dropped for 30 s (silently: no reset, no
error, no lost carrier) while the job runs over three netns nodes. The job fails naming that node within 30 s of
the cut, the others are released; once the network is back the node rejoins and the next job runs on all three.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, paho_env
from tests.e2e.netns import NetCluster, net_cluster
from tests.integration.helpers import Watcher

pytestmark = [pytest.mark.slow, pytest.mark.netns]

PARTITION_S = 30.0


@pytest.fixture
def net(tmp_path: Path, cluster: str) -> Iterator[NetCluster]:
    with net_cluster(tmp_path, cluster, 3) as cluster_:  # the agents' own defaults: what an operator runs
        yield cluster_


def test_a_partitioned_member_fails_the_job_naming_it_then_rejoins(net: NetCluster) -> None:
    argv = net.ctl("run", "hpl", "--nodes", "node[1-3]", "--json", "--param", "n=6000", "--param", "nb=128")
    with Watcher(net.local_url, net.cluster) as w:
        pipe = subprocess.PIPE
        run = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, cwd=REPO, env=paho_env(None))
        try:
            w.wait("the leader's hpcc running", lambda: any(e.kind == "progress" for e in w.events("node1")), 90)
            cut = time.monotonic()
            net.lab.partition(3)
            try:
                stdout, stderr = run.communicate(timeout=60)
                failed_after = time.monotonic() - cut
                time.sleep(max(0.0, cut + PARTITION_S - time.monotonic()))
            finally:
                net.lab.heal(3)
            healed = time.monotonic()
            w.wait("node3 back online", lambda: w.fleet.nodes["node3"].status == "online" and w.online("node3"), 90)
            rejoined_after = time.monotonic() - healed
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
    assert run.returncode == 1, stdout + stderr
    out = json.loads(stdout)
    assert out["state"] == "failed" and out["failed_node"] == "node3" and "node3" in out["reason"], out["reason"]
    assert failed_after < PARTITION_S, f"the job failed {failed_after:.1f} s after node3 was cut off"
    print(f"failed {failed_after:.1f} s after the cut ({out['reason']}); node3 back {rejoined_after:.1f} s after")
    again = net.run_hpl("node[1-3]", 384, 32)  # small: the point is that it runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["passed"] is True
