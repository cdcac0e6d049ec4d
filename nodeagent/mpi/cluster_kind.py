"""The ``hpl`` kind with a cluster role: the leader runs mpirun over every node, a member hosts its MPI daemon.

A job's ``params`` pick the role. Without ``role`` it is today's single-node HPL (HplKind). With
``role = "leader"`` the node writes a host file of ``hosts`` and runs mpirun over it, with Open MPI's remote
launcher (``plm_rsh_agent``) set to ``[mpi] launch_agent`` (or ssh). With ``role = "member"`` the node holds
itself for the job (one heavy job at a time, governor and fan prepared) and runs ``nodeagent.mpi.member``,
which becomes the MPI daemon once the leader's launch request has been accepted (see ``launch.py``).

The leader's launcher reaches its own agent over a Unix socket (``launch_socket``/``relay``) with a token the job
gets in its environment and loses with the job; the agent signs the launch with the node's key. A member keeps
the leader's name and key (from the operator's job) in its control directory (``control``), out of the job's
reach, and accepts only a launch signed by that key where the node requires signed commands.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from nodeagent.config import MpiSection
from nodeagent.errors import JobFailed, JobRejected, echo
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.kinds.hpl import render_input
from nodeagent.jobs.kinds.hpl_kind import SINGLE_PARAMS, HplKind, _last_words, oversubscribe, params_from
from nodeagent.jobs.params import refuse_undeclared
from nodeagent.mpi.control import LAUNCH_FILE, MEMBER_FILE, NO_LAUNCH_EXIT, ControlDir
from nodeagent.mpi.launcher import ENV_JOB, ENV_SOCKET, ENV_TOKEN
from nodeagent.mpi.leaders import Leaders
from nodeagent.protocol.jobs import check_node_ranks, check_ranks
from nodeagent.protocol.messages import Scalar
from nodeagent.protocol.topics import NAME_RE
from nodeagent.security.keys import KeyFileError, PublicKey

DEFAULT_LAUNCH_AGENT = MpiSection().launch_agent


def launch_agent(mpi: MpiSection) -> str:
    """mpirun's remote launcher: the configured one; the default command where it is installed, else this
    Python running the same module (a checkout or a venv, where the console script is not on PATH)."""
    if mpi.launch_agent == DEFAULT_LAUNCH_AGENT and shutil.which(DEFAULT_LAUNCH_AGENT) is None:
        return f"{sys.executable} -m nodeagent.mpi.launcher"
    return mpi.launch_agent


HOSTFILE = "hostfile"
# Every parameter each role takes (params common to the whole job reach every node, so a member accepts the grid's).
LEADER_PARAMS = (*SINGLE_PARAMS, "role", "hosts", "ranks_per_node", "leader_key")  # its own key: nothing to do
MEMBER_PARAMS = (*SINGLE_PARAMS, "role", "leader", "leader_key", "ranks_per_node")

# TCP keepalive on a member's end of Open MPI's out-of-band channel (daemon <-> mpirun), idle for most of a run: a
# daemon cut off from its mpirun (a partition, a leader that vanished) exits after 10 + 3 x 5 s instead of Open
# MPI's 300 + 9 x 20 s, so its node is free when it comes back. In the member's environment only: in mpirun's, it
# would reach every daemon's command line, which members check against what mpirun is known to send.
OOB_KEEPALIVE = {
    "OMPI_MCA_oob_tcp_keepalive_time": "10",
    "OMPI_MCA_oob_tcp_keepalive_intvl": "5",
    "OMPI_MCA_oob_tcp_keepalive_probes": "3",
}
_HOSTS_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(,[A-Za-z0-9_-]{1,64}){0,1049}$")


def _str_param(params: Mapping[str, Scalar], key: str, what: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise JobRejected(f"cluster HPL parameter {key!r} must be {what}, got {echo(value)}", f"params.{key}")
    return value


def _hosts(params: Mapping[str, Scalar]) -> list[str]:
    hosts = _str_param(params, "hosts", "the comma-separated node names, the leader first")
    if not _HOSTS_RE.match(hosts):
        raise JobRejected(f"params.hosts {echo(hosts)}: expected node names separated by commas", "params.hosts")
    names = hosts.split(",")
    if len(set(names)) != len(names):
        raise JobRejected(f"params.hosts {echo(hosts)} names a node twice", "params.hosts")
    return names


def _ranks_per_node(params: Mapping[str, Scalar]) -> int:
    value = params.get("ranks_per_node")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JobRejected(
            f"params.ranks_per_node must be a whole number from 1, got {echo(value)}",
            "params.ranks_per_node",
        )
    return value


class ClusterHplKind:
    """``hpl`` for one node, or one role of a cluster run (see the module docstring). ``control``: where a member's
    files go; ``leaders``: the leader jobs whose launches the agent relays; ``signed_only()``: whether the node
    requires signed commands now (a reload may change it), so that a member needs its leader's key."""

    name = "hpl"

    def __init__(
        self,
        mpi: MpiSection,
        base: HplKind | None = None,
        *,
        control: ControlDir,
        leaders: Leaders | None = None,
        signed_only: Callable[[], bool] = lambda: False,
    ) -> None:
        self.mpi = mpi
        self.base = base or HplKind()
        self.control = control
        self.leaders = leaders or Leaders()
        self.signed_only = signed_only

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        role = params.get("role")
        if role is None:
            return self.base.prepare(params, ctx)
        if role == "leader":
            return self._leader(params, ctx)
        if role == "member":
            return self._member(params, ctx)
        raise JobRejected(f"params.role must be 'leader' or 'member', got {echo(role)}", "params.role")

    # --- leader ------------------------------------------------------------------------------------------------
    def _leader(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        if ctx.cfg.xhpl:
            raise JobRejected("cluster HPL runs hpcc; unset jobs.xhpl on the leader", "jobs.xhpl")
        refuse_undeclared(params, LEADER_PARAMS, "cluster HPL leader")
        hpl = params_from(params)
        hosts = _hosts(params)
        per_node = _ranks_per_node(params)
        check_ranks(
            p=hpl.p,
            q=hpl.q,
            nodes=len(hosts),
            ranks_per_node=per_node,
            cores=ctx.cores,
            oversubscribe=oversubscribe(params),
            max_ranks_per_core=ctx.cfg.max_ranks_per_core,
        )
        (ctx.work_dir / "hpccinf.txt").write_text(render_input(hpl))
        # The leader's own line is "localhost", which Open MPI knows is mpirun's node; the others are node names,
        # which the agent launcher resolves through the broker (ssh mode: they must be resolvable host names).
        lines = [f"{'localhost' if i == 0 else h} slots={per_node}" for i, h in enumerate(hosts)]
        (ctx.work_dir / HOSTFILE).write_text("\n".join(lines) + "\n")
        agent_mode = self.mpi.launcher == "agent"
        argv = [
            ctx.cfg.mpirun,
            *ctx.cfg.mpirun_args,
            "--hostfile",
            HOSTFILE,
            "-np",
            str(hpl.ranks),
            # Keep each remote daemon attached to its launcher, so the launcher lives exactly as long as the
            # daemon and mpirun notices a daemon's end; and let mpirun (on the leader) launch every daemon itself.
            "--leave-session-attached",
            *("--mca", "plm_rsh_no_tree_spawn", "1"),
            *("--mca", "plm_rsh_agent", launch_agent(self.mpi) if agent_mode else self.mpi.ssh),
            *("--mca", "btl", self.mpi.btl),
        ]
        if ctx.sim:
            # Simulated nodes share one machine, so every node's ranks share its cores: a rank waiting for a
            # message must give its core away instead of spinning on it (Open MPI cannot see the sharing).
            argv += ["--mca", "mpi_yield_when_idle", "1"]
        if self.mpi.if_include:
            argv += ["--mca", "oob_tcp_if_include", self.mpi.if_include]
            argv += ["--mca", "btl_tcp_if_include", self.mpi.if_include]
        argv += ["-x", "OPENBLAS_NUM_THREADS", ctx.cfg.hpcc]
        env = {"OPENBLAS_NUM_THREADS": "1", ENV_JOB: ctx.job_id}
        if agent_mode:  # the launcher asks this node's agent, which signs and publishes: no broker login here
            if (socket_path := self.leaders.socket_path) is None:
                raise JobRejected(
                    "this agent could not open the socket its MPI launcher reaches it through (its log says why: "
                    'event=launch_socket_failed); restart it, or set [mpi] launcher = "ssh"',
                    "mpi.launcher",
                )
            env[ENV_TOKEN] = self.leaders.add(ctx.job_id, hosts)
            env[ENV_SOCKET] = str(socket_path)
        launcher = (launch_agent(self.mpi) if agent_mode else self.mpi.ssh).split()[0]
        plan = {
            "role": "leader",
            "n": hpl.n,
            "nb": hpl.nb,
            "p": hpl.p,
            "q": hpl.q,
            "ranks": hpl.ranks,
            "ranks_per_node": per_node,
            "hosts": hosts,
            "launcher": self.mpi.launcher,
            "binary": "hpcc",
        }
        return Prepared(argv=tuple(argv), requires=(ctx.cfg.hpcc, launcher), env=env, plan=plan)

    # --- member ------------------------------------------------------------------------------------------------
    def _member(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        refuse_undeclared(params, MEMBER_PARAMS, "cluster HPL member")
        leader = _str_param(params, "leader", "the leader's node name")
        if "ranks_per_node" in params:  # the leader starts this many ranks here: never trust its count
            check_node_ranks(
                _ranks_per_node(params),
                cores=ctx.cores,
                oversubscribe=oversubscribe(params),
                max_ranks_per_core=ctx.cfg.max_ranks_per_core,
                what="the leader's ranks_per_node",
            )
        if not NAME_RE.match(leader):
            raise JobRejected(f"params.leader {echo(leader)} is not a node name", "params.leader")
        key = _leader_key(params, leader, self.signed_only())
        self.control.prune()
        self.control.write(ctx.job_id, MEMBER_FILE, {"leader": leader, "key": key})
        control = str(self.control.of(ctx.job_id))
        argv = (sys.executable, "-m", "nodeagent.mpi.member", f"{self.mpi.launch_timeout_s:g}", control)
        env = {"OPENBLAS_NUM_THREADS": "1", **OOB_KEEPALIVE}
        return Prepared(argv=argv, env=env, plan={"role": "member", "leader": leader})

    # --- both ----------------------------------------------------------------------------------------------------
    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        if self.control.exists(ctx.job_id, MEMBER_FILE):
            launched = self.control.exists(ctx.job_id, LAUNCH_FILE)
            return Progress(None, "MPI daemon running" if launched else "waiting for the leader's launch")
        return self.base.progress(ctx, output_tail)

    def result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        role = prepared.plan.get("role")
        if role == "member":
            launched = self.control.exists(ctx.job_id, LAUNCH_FILE)
            return _member_result(launched, prepared, output, returncode, self.mpi.launch_timeout_s)
        result = self.base.result(ctx, prepared, output, returncode)
        if role == "leader":
            result |= {"role": "leader", "hosts": list(prepared.plan["hosts"]), "ranks": prepared.plan["ranks"]}
        return result


def _leader_key(params: Mapping[str, Scalar], leader: str, signed_only: bool) -> str:
    """The leader's public key (base64) the operator's job names, checked; "" when it names none, which only a
    node that accepts unsigned commands allows."""
    value = params.get("leader_key", "")
    if value == "" and signed_only:
        raise JobRejected(
            f"params.leader_key is missing: this node obeys only signed commands (security.require_signed), so it "
            f"accepts its MPI daemon only from a launch signed by the leader {leader}'s key, which the job must "
            "name; piclusterctl takes it from the leader's facts (is the leader's agent older than this one?)",
            "params.leader_key",
        )
    if value == "":
        return ""
    try:
        return PublicKey.parse(str(value)).b64
    except KeyFileError as exc:
        raise JobRejected(f"params.leader_key: {exc}", "params.leader_key") from None


def _member_result(
    launched: bool, prepared: Prepared, output: str, returncode: int, timeout_s: float
) -> dict[str, Any]:
    leader = prepared.plan.get("leader")
    if not launched and returncode == NO_LAUNCH_EXIT:
        raise JobFailed(f"the leader {leader} did not launch this node's MPI daemon within {timeout_s:g} s")
    if returncode != 0:
        raise JobFailed(f"the MPI daemon exited with status {returncode}: {_last_words(output)}")
    return {"role": "member", "leader": leader, "passed": True}
