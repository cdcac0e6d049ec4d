"""The node's own IP addresses, read from the kernel's tables (no subprocess, no connection): the facts carry them
so piclusterctl can name a cluster job's peers by address (distcc's ``--allow`` and host list).

IPv4 from ``/proc/net/fib_trie`` (every ``/32 host LOCAL`` entry is an address of this network namespace), IPv6
from ``/proc/net/if_inet6`` (scope global only). Loopback and link-local addresses are left out.
"""

from __future__ import annotations

import ipaddress

MAX_ADDRESSES = 16  # a node with more is unusual; facts stay small


def ipv4_from_fib_trie(text: str) -> list[str]:
    """Local IPv4 addresses in a ``/proc/net/fib_trie`` text, in order, without duplicates."""
    out: list[str] = []
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:].strip()
        elif stripped == "/32 host LOCAL" and last and last not in out:
            out.append(last)
    return [a for a in out if _usable(a)]


def ipv6_from_if_inet6(text: str) -> list[str]:
    """Global-scope IPv6 addresses in a ``/proc/net/if_inet6`` text (``ADDR IFINDEX PREFIX SCOPE FLAGS NAME``)."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32 or parts[3] != "00":
            continue
        try:
            addr = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        except ValueError:
            continue
        if addr not in out and _usable(addr):
            out.append(addr)
    return out


def _usable(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified)


def local_addresses(proc_net: str = "/proc/net") -> tuple[str, ...]:
    """This node's addresses, IPv4 first; () when the tables cannot be read."""
    found: list[str] = []
    for name, parse in (("fib_trie", ipv4_from_fib_trie), ("if_inet6", ipv6_from_if_inet6)):
        try:
            with open(f"{proc_net}/{name}") as fh:
                found += parse(fh.read())
        except OSError:
            continue
    return tuple(found[:MAX_ADDRESSES])
