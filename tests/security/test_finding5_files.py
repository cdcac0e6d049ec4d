"""Issue 12, finding 5: "The root agent reads output.log and writes launch.json.tmp in directories the job user owns: a
job replaced output.log with a symlink and the agent published a root-only file."

Replayed with real agents running their jobs as an unprivileged user: a template that swaps output.log for a link to
a root-only file, and stand-in hpcc, stress-ng and llama-bench binaries that plant links (and a FIFO) under every
name the agent reads back from a job directory, and in the job's TMPDIR, which the agent removes. Nothing of the
root-only file is ever published or logged, the links' targets are untouched, and each job ends with its own output
or a reason naming the planted file. (The MPI control files, launch.json and member.json, move out of the job
directory with the signed launches.)
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from nodeagent.protocol import Command, Event, JobSpec, encode
from tests.conftest import REPO, AgentFactory, Mosquitto
from tests.integration.helpers import Watcher

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a root-only file and a jobs user need the suite to run as root"),
]

BENCH_JSON = REPO / "tests" / "data" / "jobs" / "llama-bench_0.3.36_tiny_cpu.json.txt"


class Planted:
    """A root-only secret, a root-owned canary directory, and scripts that point links at them."""

    def __init__(self, tmp: Path) -> None:
        self.text = f"ROOT-ONLY-{secrets.token_hex(8)}"
        self.secret = tmp / "secret"
        self.secret.write_text(self.text + "\n")
        self.secret.chmod(0o600)
        self.canary = tmp / "canary"
        self.canary.mkdir()
        (self.canary / "keep").write_text("keep\n")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.bin.chmod(0o755)

    def script(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    def links(self, *names: str) -> str:
        """Shell lines replacing each name in the job directory (the job's cwd) with a link to the secret."""
        return "".join(f"rm -f {n}; ln -s {self.secret} {n}\n" for n in names)

    def assert_untouched(self) -> None:
        assert self.secret.read_text() == self.text + "\n" and stat.S_IMODE(self.secret.stat().st_mode) == 0o600
        assert (self.canary / "keep").read_text() == "keep\n"


def run(w: Watcher, node: str, job: JobSpec) -> Event:
    w.publish(w.topics.node_cmd(node), encode(Command(id=job.id, cmd="run", job=job)))
    return w.wait(f"{job.id} to end", lambda: next((e for e in w.events(node, job.id) if e.terminal), None), 90)


def assert_never_published(w: Watcher, planted: Planted, log: str) -> None:
    leaked = [m.topic for m in w.seen if planted.text.encode() in m.payload]
    assert leaked == [], f"the root-only file went out on {leaked}"
    assert planted.text not in log


def test_a_job_that_swaps_output_log_for_a_link_publishes_only_its_own_output(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    planted = Planted(tmp_path)
    swap = planted.script("swap", "echo before\n" + planted.links("output.log") + "echo after\n")
    agent = agents.start(
        "n1", config=f'[[jobs.template]]\nname = "swap"\nargv = ["{swap}"]\nheavy = false\ntimeout_s = 30\n'
    )
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        end = run(w, "n1", JobSpec(id="swap1", kind="swap"))
        w.pump(0.5)
    assert end.kind == "finished", end
    assert end.result["output_tail"] == ["before", "after"]  # what the job printed, from the agent's own descriptor
    assert os.path.islink(agents.tmp_path / "n1" / "jobs" / "swap1" / "output.log")  # the job did swap it
    assert_never_published(w, planted, agent.output())
    planted.assert_untouched()


def test_links_planted_under_every_name_the_agent_reads_are_never_followed(
    agents: AgentFactory, broker: Mosquitto, cluster: str, tmp_path: Path
) -> None:
    planted = Planted(tmp_path)
    tmp_links = f'ln -s {planted.canary} "$TMPDIR/canary"\nln -s {planted.secret} "$TMPDIR/secret"\n'
    everywhere = planted.links("output.log", "hpccoutf.txt", "stress.yaml", "llama-bench.json", "hpccinf.txt")
    everywhere += f"ln -s {planted.canary} canary\n" + tmp_links
    hpcc = planted.script("hpcc", everywhere)
    stress = planted.script("stress-ng", everywhere + "echo 'stress-ng: info: setting to a 1 second run'\n")
    # llama-bench's stdout is a file the agent made: write a real result to it, then swap the name for a link.
    llama = planted.script("llama-bench", f"cat {BENCH_JSON}\n" + everywhere)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    config = (
        f'kinds = ["hpl", "stress", "llama-bench"]\nhpcc = "{hpcc}"\nstress_ng = "{stress}"\n'
        f'llama_bench = "{llama}"\nkeep_jobs = 1\n'  # keep_jobs = 1: the next job's start prunes the last one's dir
    )
    agent = agents.start("n1", config=config)
    hpl = {"n": 200, "nb": 32, "p": 1, "q": 1}
    with Watcher(broker.url, cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        ends = {
            "hpl": run(w, "n1", JobSpec(id="plant-hpl", kind="hpl", params=hpl, queue=True)),
            "stress": run(w, "n1", JobSpec(id="plant-stress", kind="stress", params={"duration_s": 1}, queue=True)),
            "llama": run(
                w, "n1", JobSpec(id="plant-llama", kind="llama-bench", params={"model": str(model)}, queue=True)
            ),
        }
        # A FIFO where the agent reads the result: opening it must not hang the agent.
        planted.script("hpcc", "rm -f hpccoutf.txt; mkfifo hpccoutf.txt\n")
        ends["fifo"] = run(w, "n1", JobSpec(id="plant-fifo", kind="hpl", params=hpl, queue=True))
        w.pump(0.5)
    assert ends["hpl"].kind == "failed", ends["hpl"]
    assert "hpccoutf.txt in the job directory is a symbolic link" in ends["hpl"].reason
    assert ends["stress"].kind == "failed" and "reported no metrics" in ends["stress"].reason, ends["stress"]
    assert ends["llama"].kind == "finished", ends["llama"]  # the agent read llama-bench's stdout from its own file
    assert ends["llama"].result["tests"], ends["llama"].result
    assert ends["fifo"].kind == "failed" and "hpccoutf.txt in the job directory is not a regular file" in (
        ends["fifo"].reason
    )
    assert_never_published(w, planted, agent.output())
    planted.assert_untouched()
    leftovers = list(Path("/tmp").glob("picluster-plant-*"))
    assert leftovers == [], f"TMPDIRs left behind: {leftovers}"
