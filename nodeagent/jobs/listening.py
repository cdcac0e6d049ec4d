"""Is a TCP port listening on this machine? Read from /proc/net/tcp{,6}: no connection is made, so a worker that
would take a probe for its leader (dllama, rpc-server) never sees one."""

from __future__ import annotations

LISTEN = "0A"


def listening_ports(proc_net: str = "/proc/net") -> set[int]:
    """Every local TCP port in the LISTEN state, IPv4 and IPv6."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc_net}/{name}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == LISTEN:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports
