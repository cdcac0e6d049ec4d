"""Which command lines a node accepts as "start Open MPI's daemon for this job": pure checks, no I/O.

mpirun's rsh launcher calls ``<plm_rsh_agent> <host> orted <args...>`` and means the words after the host as one
remote shell command line (ssh joins them with spaces; the remote shell removes the quotes ORTE puts around
values). :func:`daemon_argv` does the same join-and-split without a shell, then accepts an allowlist: the program
``orted`` followed only by ``-mca NAME VALUE`` pairs whose names Open MPI 4.1's mpirun was seen to send (recorded in
tests/data/mpi/, see its README) and whose values have the recorded shape. Anything else — a parameter that loads
code or files (``mca_base_component_path``, ``mca_base_param_files``, ``mca_base_envar_file_prefix``), one that
reports to or starts something else (``orte_report_uri``, a fork agent, PRRTE's ``plm_ssh_agent``), a flag such as
``--daemonize``, a second command — is refused with the reason.

``orte_hnp_uri`` says where the daemon connects to take its orders (mpirun, the "HNP"): whoever runs that endpoint
decides what the daemon starts. :func:`pin_hnp` keeps only the addresses the caller confirms are the leader's
(launch.py decides which, from a source the sender cannot choose).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nodeagent.errors import echo

DAEMON = "orted"
MCA_FLAGS = ("-mca", "--mca")
MCA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
MAX_WORDS = 400
MAX_CHARS = 16384

_COMPONENTS = re.compile(r"^\^?[a-z0-9_]{1,32}(,[a-z0-9_]{1,32}){0,31}$")  # btl, pmix: "self,vader,tcp", "^s1,s2"
_SWITCH = re.compile(r"^(0|1|true|false)$")
_NETWORKS = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}(,[A-Za-z0-9_.:/-]{1,64}){0,15}$")  # interfaces or CIDRs
_POLICY = re.compile(r"^[A-Za-z0-9_=-]{1,32}(:[A-Za-z0-9_=,-]{1,32}){0,4}$")  # "core", "ppr:1:node", "none"
_NODE_REGEX = re.compile(r"^[A-Za-z0-9_.,:@()\[\]-]{1,4096}$")  # "vm,node[1:2-3]@0(3)"
_UINT = re.compile(r"^[0-9]{1,10}$")


def _match(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    return lambda value: None if pattern.match(value) else f"expected {what}"


def _exact(expected: str) -> Callable[[str], str | None]:
    return lambda value: None if value == expected else f"expected {expected!r}"


def _count(low: int) -> Callable[[str], str | None]:
    return lambda value: None if _UINT.match(value) and low <= int(value) < 2**32 else f"expected a number from {low}"


# Every parameter Open MPI 4.1's mpirun put on a remote daemon's line in the recordings, with its value's shape.
# The first group is on every line; the rest come from picluster's own mpirun options ([mpi] btl, if_include,
# --sim) and from mpirun options an operator may set in jobs.mpirun_args (--bind-to, --map-by, --rank-by,
# --report-bindings, --oversubscribe). plm_rsh_agent and orte_hnp_uri are checked against the node's config and
# the leader in daemon_argv and pin_hnp.
PARAMS: dict[str, Callable[[str], str | None]] = {
    "orte_leave_session_attached": _exact("1"),  # the daemon stays attached to its launcher (never --daemonize)
    "ess": _exact("env"),
    "ess_base_jobid": _count(1),
    "ess_base_vpid": _count(1),  # vpid 0 is mpirun itself
    "ess_base_num_procs": _count(2),
    "orte_node_regex": _match(_NODE_REGEX, "Open MPI's node list, e.g. 'vm,node[1:2-3]@0(3)'"),
    "orte_hnp_uri": lambda value: None,  # parsed by parse_hnp_uri
    "plm": _exact("rsh"),
    "plm_rsh_agent": lambda value: None,  # compared with the node's launcher in daemon_argv
    "plm_rsh_no_tree_spawn": _exact("1"),  # a daemon never launches other daemons itself
    "pmix": _match(_COMPONENTS, "a list of component names"),
    "btl": _match(_COMPONENTS, "a list of component names, e.g. 'self,vader,tcp'"),
    "mpi_yield_when_idle": _match(_SWITCH, "0 or 1"),
    "oob_tcp_if_include": _match(_NETWORKS, "interface names or networks"),
    "btl_tcp_if_include": _match(_NETWORKS, "interface names or networks"),
    "hwloc_base_binding_policy": _match(_POLICY, "a binding policy such as 'none' or 'core'"),
    "rmaps_base_mapping_policy": _match(_POLICY, "a mapping policy such as 'core' or 'ppr:1:node'"),
    "rmaps_base_ranking_policy": _match(_POLICY, "a ranking policy such as 'core'"),
    "orte_report_bindings": _match(_SWITCH, "0 or 1"),
    "hwloc_base_report_bindings": _match(_SWITCH, "0 or 1"),
    "rmaps_base_oversubscribe": _match(_SWITCH, "0 or 1"),
}
# Without these the daemon would not belong to one mpirun, or would detach from its launcher.
REQUIRED = ("ess_base_jobid", "ess_base_vpid", "ess_base_num_procs", "orte_hnp_uri", "orte_leave_session_attached")
# Why a few well-known hostile names are refused, for a clearer message than "not on the list".
DANGEROUS = {
    "mca_base_component_path": "would load Open MPI components (code) from a directory the sender names",
    "mca_base_param_files": "would read more parameters from a file the sender names",
    "mca_base_envar_file_prefix": "would read parameters from files the sender names",
    "orte_report_uri": "would report the daemon's contact address to a place the sender names",
    "plm_ssh_agent": "is PRRTE's launcher program: the daemon would start a program the sender names",
    "orte_fork_agent": "would make the daemon start every process through a program the sender names",
    "orte_launch_agent": "would make the daemon start another program",
}


class BadDaemonCommand(ValueError):
    """The command is not Open MPI's daemon with its expected arguments; the message says what is wrong."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HnpUri:
    """mpirun's contact address as ORTE writes it: ``JOBID.VPID;tcp://A[,A]:PORT;tcp6://[A[,A]]:PORT``."""

    jobid: int
    vpid: int
    endpoints: tuple[tuple[tuple[IPAddress, ...], int], ...]  # (addresses of one family, port)

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(a for addrs, _ in self.endpoints for a in addrs)

    def only(self, keep: Callable[[IPAddress], bool]) -> HnpUri:
        """The same contact with only the addresses ``keep`` accepts (families left empty dropped)."""
        kept = tuple((tuple(a for a in addrs if keep(a)), port) for addrs, port in self.endpoints)
        return HnpUri(self.jobid, self.vpid, tuple((addrs, port) for addrs, port in kept if addrs))

    def __str__(self) -> str:
        parts = [f"{self.jobid}.{self.vpid}"]
        for addrs, port in self.endpoints:
            if addrs[0].version == 4:
                parts.append(f"tcp://{','.join(map(str, addrs))}:{port}")
            else:
                parts.append(f"tcp6://[{','.join(map(str, addrs))}]:{port}")
        return ";".join(parts)


_HNP_NAME = re.compile(r"^([0-9]{1,10})\.([0-9]{1,10})$")
_TCP4 = re.compile(r"^tcp://([0-9.,]{7,512}):([0-9]{1,5})$")
_TCP6 = re.compile(r"^tcp6://\[([0-9A-Fa-f:.,]{2,1024})\]:([0-9]{1,5})$")


def parse_hnp_uri(text: str) -> HnpUri:
    """``orte_hnp_uri``'s value as an :class:`HnpUri`, or BadDaemonCommand saying what is wrong."""
    name, *contacts = text.split(";")
    m = _HNP_NAME.match(name)
    if not m or not contacts or len(contacts) > 2:
        raise BadDaemonCommand(f"orte_hnp_uri {echo(text)} is not mpirun's contact (JOBID.0;tcp://ADDRESS:PORT)")
    endpoints = []
    for contact in contacts:
        tcp = _TCP4.match(contact) or _TCP6.match(contact)
        if not tcp:
            raise BadDaemonCommand(f"orte_hnp_uri: {echo(contact)} is not a tcp:// or tcp6:// contact")
        try:
            addrs = tuple(ipaddress.ip_address(a) for a in tcp.group(1).split(","))
        except ValueError:
            raise BadDaemonCommand(f"orte_hnp_uri: {echo(contact)} holds something that is not an IP address") from None
        port = int(tcp.group(2))
        if not 1 <= port <= 65535 or any(a.version != (4 if contact.startswith("tcp:") else 6) for a in addrs):
            raise BadDaemonCommand(f"orte_hnp_uri: {echo(contact)} has a bad port or mixes address families")
        endpoints.append((addrs, port))
    return HnpUri(int(m.group(1)), int(m.group(2)), tuple(endpoints))


def daemon_argv(words: Sequence[str], *, rsh_agents: Sequence[str] = ()) -> list[str]:
    """The daemon's argv from the words mpirun passed after the host name, or BadDaemonCommand.

    ``rsh_agents`` are the values ``plm_rsh_agent`` may have on the daemon's line (the launcher this node
    uses, or ssh); any other value is refused, since a daemon uses it to start programs itself.
    """
    text = " ".join(words)
    if len(text) > MAX_CHARS:
        raise BadDaemonCommand(f"the daemon command is {len(text)} characters long, more than {MAX_CHARS}")
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise BadDaemonCommand(f"the daemon command does not parse as words: {exc}") from None
    if not argv:
        raise BadDaemonCommand("the daemon command is empty")
    if len(argv) > MAX_WORDS:
        raise BadDaemonCommand(f"the daemon command has {len(argv)} words, more than {MAX_WORDS}")
    if argv[0] != DAEMON:
        raise BadDaemonCommand(f"only Open MPI's daemon ({DAEMON}) may be launched, got {echo(argv[0])}")
    seen: dict[str, str] = {}
    i = 1
    while i < len(argv):
        if argv[i] not in MCA_FLAGS:
            word = echo(argv[i])
            raise BadDaemonCommand(f"unexpected word {word} in the daemon command (only -mca NAME VALUE pairs)")
        if i + 2 >= len(argv):
            raise BadDaemonCommand(f"{argv[i]} at word {i} needs a name and a value")
        name, value = argv[i + 1], argv[i + 2]
        _check_mca(name, value, rsh_agents)
        if name in seen:
            raise BadDaemonCommand(f"MCA parameter {name} is given twice")
        seen[name] = value
        i += 3
    missing = [k for k in REQUIRED if k not in seen]
    if missing:
        raise BadDaemonCommand(f"the daemon command lacks {', '.join(missing)}; it was not made by mpirun")
    hnp = parse_hnp_uri(seen["orte_hnp_uri"])
    if hnp.jobid != int(seen["ess_base_jobid"]) or hnp.vpid != 0:
        raise BadDaemonCommand(f"orte_hnp_uri names {hnp.jobid}.{hnp.vpid}, not mpirun of job {seen['ess_base_jobid']}")
    if int(seen["ess_base_vpid"]) >= int(seen["ess_base_num_procs"]):
        raise BadDaemonCommand("ess_base_vpid must be below ess_base_num_procs")
    return argv


def _check_mca(name: str, value: str, rsh_agents: Sequence[str]) -> None:
    if not MCA_NAME_RE.match(name):
        raise BadDaemonCommand(f"{echo(name)} is not an MCA parameter name")
    if name in DANGEROUS:
        raise BadDaemonCommand(f"MCA parameter {name} is refused: it {DANGEROUS[name]}")
    check = PARAMS.get(name)
    if check is None:
        raise BadDaemonCommand(
            f"MCA parameter {name} is not one Open MPI's mpirun sends its daemons (nodeagent/mpi/orted.py lists them)"
        )
    if name == "plm_rsh_agent" and value not in rsh_agents:
        raise BadDaemonCommand(f"MCA parameter plm_rsh_agent={echo(value)} is not this cluster's launcher")
    problem = check(value)
    if problem:
        raise BadDaemonCommand(f"MCA parameter {name}={echo(value)}: {problem}")


def pin_hnp(argv: list[str], is_leader: Callable[[IPAddress], bool], leader: str) -> list[str]:
    """``argv`` with ``orte_hnp_uri`` reduced to the addresses ``is_leader`` accepts, so the daemon can only take
    orders from the leader's mpirun; BadDaemonCommand when none is the leader's."""
    at = argv.index("orte_hnp_uri") + 1
    hnp = parse_hnp_uri(argv[at])
    pinned = hnp.only(is_leader)
    if not pinned.endpoints:
        shown = ", ".join(map(str, hnp.addresses[:8]))
        raise BadDaemonCommand(f"orte_hnp_uri points at {shown}, none of which is the leader {leader}'s address")
    return [*argv[:at], str(pinned), *argv[at + 1 :]]
