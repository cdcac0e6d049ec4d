"""Which addresses are a cluster job's leader, as this member sees it: the source ``orte_hnp_uri`` is held to.

The leader's node name comes from the job the operator submitted (``params.leader``), never from the launch
request. Its addresses come from this node's own name service (``/etc/hosts``, or a DNS server the site controls),
exactly as ``ssh <leader>`` would find it: the sender of a launch cannot choose them. Loopback addresses never
count (a daemon told to connect to 127.0.0.1 would take orders from this node itself), except in ``--sim``, where
a simulated cluster's nodes share one machine: there an address of this machine counts as the leader's too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from nodeagent.mpi.orted import IPAddress

Resolver = Callable[[str], list[str]]


def resolve(name: str) -> list[str]:
    """The addresses ``name`` resolves to here (every family); OSError when it does not resolve."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def is_local(addr: IPAddress) -> bool:
    """True when ``addr`` belongs to this machine: the kernel lets a socket bind to it."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((str(addr), 0))
    except OSError:
        return False
    return True


class LeaderUnknown(LookupError):
    """The leader's name does not resolve here; the message says how to fix it."""


def leader_check(leader: str, *, sim: bool, resolver: Resolver = resolve) -> Callable[[IPAddress], bool]:
    """A test for "this address is ``leader``'s"; LeaderUnknown when nothing could pass it."""
    try:
        found = {ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(leader)}
    except (OSError, ValueError, UnicodeError) as exc:
        if not sim:
            raise LeaderUnknown(
                f"the leader's name {leader} does not resolve on this node ({exc}): a member connects its MPI "
                f"daemon only to the leader's own address; add '<address> {leader}' to /etc/hosts on every node "
                "or name nodes by their DNS host names"
            ) from None
        found = set()
    found = {a for a in found if sim or not a.is_loopback}
    if not found and not sim:
        raise LeaderUnknown(
            f"the leader's name {leader} resolves only to loopback addresses on this node; list its network "
            "address in /etc/hosts on every node"
        )

    def check(addr: IPAddress) -> bool:
        return addr in found or (sim and is_local(addr))

    return check
