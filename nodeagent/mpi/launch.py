"""The member side of a launch request: accept Open MPI's daemon for a job this node holds, or refuse and say why.

Accepted only when all of these hold: the node is running the member part of exactly that job, the request
comes from the job's leader, the daemon has not been launched for it yet, the command is Open MPI's daemon with
only the arguments mpirun sends (``orted.daemon_argv``), and its ``orte_hnp_uri`` names the leader's own address
(``leader_addr``; other addresses are taken out). Where the node requires signed commands, the command gate
(``nodeagent/security/gate.py``) has also checked, before this, that the request is signed by the leader's key the
operator's job named (``launch_signer``). The member process waiting for the job then becomes that daemon
(``member.py``), reading its argv from the job's control directory (``control.py``).
"""

from __future__ import annotations

from nodeagent.config import MpiSection
from nodeagent.errors import JobRejected
from nodeagent.mpi.cluster_kind import launch_agent
from nodeagent.mpi.control import LAUNCH_FILE, MEMBER_FILE, ControlDir
from nodeagent.mpi.leader_addr import LeaderUnknown, Resolver, leader_check, resolve
from nodeagent.mpi.orted import BadDaemonCommand, daemon_argv, pin_hnp
from nodeagent.protocol import Command, JobSpec
from nodeagent.security.gate import LaunchSigner
from nodeagent.security.keys import KeyFileError, PublicKey


def accept_launch(
    cmd: Command,
    current_job: str | None,
    control: ControlDir,
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
    member = control.read(cmd.job_id, MEMBER_FILE)
    leader = member.get("leader") if member else None
    if not isinstance(leader, str):
        raise JobRejected(f"job {cmd.job_id} is not a cluster job this node is a member of", "job_id")
    if cmd.sender != leader:
        raise JobRejected(f"only the job's leader {leader} may launch its daemon, not {cmd.sender!r}", "sender")
    if control.exists(cmd.job_id, LAUNCH_FILE):
        raise JobRejected(f"the MPI daemon of job {cmd.job_id} was already launched on this node", "job_id")
    try:
        argv = daemon_argv(cmd.argv, rsh_agents=(launch_agent(mpi), mpi.ssh))
        argv = pin_hnp(argv, leader_check(leader, sim=sim, resolver=resolver), leader)
    except (BadDaemonCommand, LeaderUnknown) as exc:
        raise JobRejected(f"launch refused: {exc}", "argv") from None
    control.write(cmd.job_id, LAUNCH_FILE, {"argv": argv, "leader": leader})  # the waiting member execs it
    return argv


def launch_signer(current_job: str | None, control: ControlDir) -> LaunchSigner | None:
    """The leader key the running member job accepts its launch under (None: no member job, or no key named)."""
    member = control.read(current_job, MEMBER_FILE) if current_job else None
    if not member or not isinstance(member.get("leader"), str) or not member.get("key"):
        return None
    try:
        key = PublicKey.parse(str(member["key"]), member["leader"])
    except KeyFileError:
        return None
    assert current_job is not None
    return LaunchSigner(current_job, member["leader"], key)


def member_of(job: JobSpec, node: str) -> str:
    """The leader's name when ``job`` makes ``node`` a member of a cluster job, else ""."""
    params = job.params_for(node)
    leader = params.get("leader")
    return leader if params.get("role") == "member" and isinstance(leader, str) else ""


def leader_of(job_id: str, control: ControlDir) -> str:
    """The leader of the member job ``job_id`` running here, or "" when it is not a member job."""
    member = control.read(job_id, MEMBER_FILE)
    leader = member.get("leader") if member else None
    return leader if isinstance(leader, str) else ""
