"""Automatic power-cycle of a node that stays offline (off by default).

A node that has been offline (its will fired, or it never came back) for ``offline_after_s`` is power-cycled
through its slot; if it stays offline, again after ``backoff_s``, then after twice that, and so on, at most
``max_tries`` times. After the last try has had its back-off, the policy gives up with one decision and leaves
the node alone until it has been online again, which also resets its count. A node whose slot is unknown, and
the driver's own slot, are never cycled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nodeagent.policy.config import AutoCycleConfig


@dataclass(frozen=True)
class CycleTrack:
    """What the policy remembers about one node. Start with ``CycleTrack()``."""

    offline_since: float | None = None
    tries: int = 0
    next_at: float | None = None  # earliest time of the next try (or of giving up)
    gave_up: bool = False


@dataclass(frozen=True)
class CycleDecision:
    """Power-cycle ``node`` in ``slot`` now (``attempt`` of ``max_tries``), or give up on it."""

    kind: Literal["cycle", "give_up"]
    node: str
    slot: int
    attempt: int
    offline_s: float


def auto_cycle(
    online: Mapping[str, bool],
    slots: Mapping[str, int],
    tracks: Mapping[str, CycleTrack],
    cfg: AutoCycleConfig,
    now: float,
    *,
    own_slot: int,
) -> tuple[dict[str, CycleTrack], tuple[CycleDecision, ...]]:
    """Decide for every node in ``online`` (name -> online now); returns the new tracks and what to do."""
    new: dict[str, CycleTrack] = {}
    decisions: list[CycleDecision] = []
    for node, is_online in sorted(online.items()):
        track = tracks.get(node, CycleTrack())
        if is_online:
            new[node] = CycleTrack()
            continue
        since = now if track.offline_since is None else track.offline_since
        track = CycleTrack(since, track.tries, track.next_at, track.gave_up)
        slot = slots.get(node, 0)
        due_at = since + cfg.offline_after_s if track.next_at is None else track.next_at
        if not cfg.enabled or track.gave_up or slot <= 0 or slot == own_slot or now < due_at:
            new[node] = track
            continue
        if track.tries >= cfg.max_tries:
            decisions.append(CycleDecision("give_up", node, slot, track.tries, now - since))
            new[node] = CycleTrack(since, track.tries, None, gave_up=True)
            continue
        tries = track.tries + 1
        decisions.append(CycleDecision("cycle", node, slot, tries, now - since))
        new[node] = CycleTrack(since, tries, now + cfg.backoff_s * 2 ** (tries - 1))
    return new, tuple(decisions)
