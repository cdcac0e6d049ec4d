"""Node selection in ClusterShell syntax: ``all``, ``node[1-4]``, ``node1,node3``, ``node[1-8]!node5``."""

from __future__ import annotations

from collections.abc import Iterable

from ClusterShell.NodeSet import NodeSet, NodeSetParseError


class SelectionError(ValueError):
    """The node set cannot be parsed or selects no known node."""


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
        return list(NodeSet.fromlist(sorted(known_set)))
    wanted = expand(pattern)
    unknown = [n for n in wanted if n not in known_set]
    if unknown:
        hint = f"; known: {fold(known_set)}" if known_set else ""
        raise SelectionError(f"unknown node(s) {fold(unknown)}{hint}")
    return wanted


def expand(pattern: str) -> list[str]:
    """The names a node set stands for (no ``all``); SelectionError when it does not parse or is empty."""
    try:
        names = list(NodeSet(pattern))
    except NodeSetParseError as exc:
        raise SelectionError(f"node set: {exc}: {pattern!r}") from None
    if not names:
        raise SelectionError(f"node set {pattern!r} is empty")
    return names


def fold(names: Iterable[str]) -> str:
    """``node1,node2,node3`` -> ``node[1-3]``."""
    return str(NodeSet.fromlist(list(names)))
