"""The member side of a launch request: accept Open MPI's daemon for a job this node holds, or refuse and say why.

Accepted only when all of these hold: the node is running the member part of exactly that job, the request
comes from the job's leader, the daemon has not been launched for it yet, the command is Open MPI's daemon with
only the arguments mpirun sends (``orted.daemon_argv``), and its ``orte_hnp_uri`` names the leader's own address
(``leader_addr``; other addresses are taken out). The member process waiting in the job directory then becomes
that daemon (``member.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nodeagent.config import AgentConfig, MpiSection, read_password
from nodeagent.errors import JobRejected
from nodeagent.mpi.cluster_kind import LAUNCH_FILE, MEMBER_FILE, launch_agent
from nodeagent.mpi.leader_addr import LeaderUnknown, Resolver, leader_check, resolve
from nodeagent.mpi.orted import BadDaemonCommand, daemon_argv, pin_hnp
from nodeagent.mqtt.settings import Credentials
from nodeagent.protocol import Command, JobSpec


def accept_launch(
    cmd: Command,
    current_job: str | None,
    work_dir: Path,
    mpi: MpiSection,
    *,
    sim: bool = False,
    resolver: Resolver = resolve,
) -> list[str]:
    """Check ``cmd`` and hand the daemon's argv to the waiting member process; raise JobRejected otherwise.
    ``sim``: this is a simulated node, whose leader may be this same machine (see ``leader_addr``)."""
    if current_job != cmd.job_id:
        running = f"job {current_job}" if current_job else "no job"
        raise JobRejected(f"this node runs {running}, not the member part of {cmd.job_id}", "job_id")
    job_dir = work_dir / cmd.job_id
    try:
        leader = json.loads((job_dir / MEMBER_FILE).read_text())["leader"]
    except (OSError, ValueError, KeyError):
        raise JobRejected(f"job {cmd.job_id} is not a cluster job this node is a member of", "job_id") from None
    if cmd.sender != leader:
        raise JobRejected(f"only the job's leader {leader} may launch its daemon, not {cmd.sender!r}", "sender")
    if (job_dir / LAUNCH_FILE).exists():
        raise JobRejected(f"the MPI daemon of job {cmd.job_id} was already launched on this node", "job_id")
    try:
        argv = daemon_argv(cmd.argv, rsh_agents=(launch_agent(mpi), mpi.ssh))
        argv = pin_hnp(argv, leader_check(leader, sim=sim, resolver=resolver), leader)
    except (BadDaemonCommand, LeaderUnknown) as exc:
        raise JobRejected(f"launch refused: {exc}", "argv") from None
    tmp = job_dir / (LAUNCH_FILE + ".tmp")
    tmp.write_text(json.dumps({"argv": argv, "leader": leader}))
    os.chmod(tmp, 0o644)  # the jobs user reads it
    os.replace(tmp, job_dir / LAUNCH_FILE)  # the waiting member never sees half a file
    return argv


def launcher_env(cfg: AgentConfig, node: str) -> dict[str, str]:
    """What the MPI launcher on a leader needs to reach the broker as this node (nodeagent/mpi/launcher.py).

    Jobs run as the jobs user, which cannot read the agent's password file, so the password travels in the
    job's environment (readable by that user's own processes only)."""
    env = {"PICLUSTER_BROKER": str(cfg.broker), "PICLUSTER_CLUSTER": cfg.agent.cluster, "PICLUSTER_NODE": node}
    password = read_password(cfg.mqtt, cfg.source) if cfg.mqtt.username else ""
    # Not the client certificate: its key file is the agent's, unreadable by the jobs user.
    return env | Credentials(cfg.mqtt.username, password, cfg.mqtt.ca_file).to_env()


def member_of(job: JobSpec, node: str) -> str:
    """The leader's name when ``job`` makes ``node`` a member of a cluster job, else ""."""
    params = job.params_for(node)
    leader = params.get("leader")
    return leader if params.get("role") == "member" and isinstance(leader, str) else ""


def leader_of(job_id: str, work_dir: Path) -> str:
    """The leader of the member job ``job_id`` running here, or "" when it is not a member job."""
    try:
        return str(json.loads((work_dir / job_id / MEMBER_FILE).read_text())["leader"])
    except (OSError, ValueError, KeyError):
        return ""
