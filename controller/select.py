"""Node selection in ClusterShell syntax: ``all``, ``node[1-4]``, ``node1,node3``, ``node[1-8]!node5``.

ClusterShell is imported only when a node set is parsed or folded: ``all`` needs no parser, and a command that
never selects (``--version``, ``jobs``) never pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


class SelectionError(ValueError):
    """The node set cannot be parsed or selects no known node."""


def natural_key(name: str) -> tuple[Any, ...]:
    """node2 before node10 (the order ClusterShell expands a folded set in)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def expand(pattern: str) -> list[str]:
    """The names a node set stands for (no ``all``); SelectionError naming the pattern when it cannot be parsed
    or is empty."""
    from ClusterShell.NodeSet import NodeSet, NodeSetParseError

    try:
        names = list(NodeSet(pattern))
    except NodeSetParseError as exc:
        raise SelectionError(f"node set: {exc}: {pattern!r}") from None
    if not names:
        raise SelectionError(f"node set {pattern!r} is empty")
    return names


def select(pattern: str, known: Iterable[str]) -> list[str]:
    """Expand ``pattern`` against the known nodes. ``all`` means every known node.

    Names the pattern expands to that no node has ever announced are an error: a typo must not silently shrink
    the cluster a benchmark runs on.
    """
    known_set = set(known)
    if pattern.strip() == "all":
        if not known_set:
            raise SelectionError(
                "no node has announced itself on this broker and cluster; are the agents running "
                "with the same --cluster?"
            )
        return sorted(known_set, key=natural_key)
    wanted = expand(pattern)
    unknown = [n for n in wanted if n not in known_set]
    if unknown:
        hint = f"; known: {fold(known_set)}" if known_set else ""
        raise SelectionError(f"unknown node(s) {fold(unknown)}{hint}")
    return wanted


def fold(names: Iterable[str]) -> str:
    """``node1,node2,node3`` -> ``node[1-3]``."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(names)))
