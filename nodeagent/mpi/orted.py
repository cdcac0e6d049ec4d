"""Which command lines a node accepts as "start Open MPI's daemon for this job": pure checks, no I/O.

mpirun's rsh launcher calls ``<plm_rsh_agent> <host> orted <args...>`` and means the words after the host as one
remote shell command line (ssh joins them with spaces; the remote shell removes the quotes ORTE puts around
values). :func:`daemon_argv` does the same join-and-split without a shell, then accepts only the daemon's
known shape: the program ``orted`` or ``prted`` followed by ``-mca NAME VALUE`` pairs and a few known flags, with
the parameters that tie it to one mpirun present. Anything else, such as a prefix that sets variables, a second
command, or a parameter that would make the daemon start another program, is refused with the reason.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

DAEMONS = ("orted", "prted")
MCA_FLAGS = ("-mca", "--mca", "-gmca", "--gmca")
# Flags ORTE 4.x and PRRTE put on the daemon's line. --daemonize is refused: a daemon that detaches cannot have
# its lifetime relayed back to mpirun (mpirun is told to keep it attached, see cluster_kind.py).
KNOWN_FLAGS = ("--tree-spawn", "--leave-session-attached", "-d", "--debug-daemons")
# Without these the daemon would not belong to any mpirun at all.
REQUIRED_MCA = {"orted": ("ess_base_jobid", "ess_base_vpid", "orte_hnp_uri"), "prted": ("ess_base_jobid",)}
# Parameters that name a program for the daemon to run, other than the launcher itself.
FORBIDDEN_MCA = ("orte_fork_agent", "prte_fork_agent", "orte_launch_agent", "prte_launch_agent", "odls_base_fork_agent")
MCA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
MAX_WORDS = 400
MAX_CHARS = 16384


class BadDaemonCommand(ValueError):
    """The command is not Open MPI's daemon with its expected arguments; the message says what is wrong."""


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
    program = argv[0]
    if program not in DAEMONS:
        raise BadDaemonCommand(f"only Open MPI's daemon ({' or '.join(DAEMONS)}) may be launched, got {argv[0]!r}")
    seen: dict[str, str] = {}
    i = 1
    while i < len(argv):
        word = argv[i]
        if word in MCA_FLAGS:
            if i + 2 >= len(argv):
                raise BadDaemonCommand(f"{word} at word {i} needs a name and a value")
            name, value = argv[i + 1], argv[i + 2]
            _check_mca(name, value, rsh_agents)
            seen[name] = value
            i += 3
        elif word in KNOWN_FLAGS:
            i += 1
        else:
            raise BadDaemonCommand(f"unexpected word {word!r} in the daemon command (only -mca NAME VALUE pairs)")
    missing = [k for k in REQUIRED_MCA[program] if k not in seen]
    if missing:
        raise BadDaemonCommand(f"the daemon command lacks {', '.join(missing)}; it was not made by mpirun")
    return argv


def _check_mca(name: str, value: str, rsh_agents: Sequence[str]) -> None:
    if not MCA_NAME_RE.match(name):
        raise BadDaemonCommand(f"{name!r} is not an MCA parameter name")
    if name in FORBIDDEN_MCA:
        raise BadDaemonCommand(f"MCA parameter {name} would make the daemon start another program")
    if name.endswith("rsh_agent") and value not in rsh_agents:
        raise BadDaemonCommand(f"MCA parameter {name}={value!r} is not this cluster's launcher")
    if "\n" in value or "\0" in value:
        raise BadDaemonCommand(f"MCA parameter {name} has a control character in its value")
