"""Chassis power from the operator's side: the budget check before a run, and ``piclusterctl power``.

Nodes that start together cannot see each other start, so ``run`` checks the whole selection against each chassis
driver's last decision before it sends anything (the same ``admit_heavy`` the nodes run). ``power`` sends one
command per slot to the node that switches the slots, and waits for its answer to each.
"""

from __future__ import annotations

import time

from controller.dispatch import new_job_id
from controller.fleet import Fleet
from controller.session import Session
from nodeagent.policy.power_budget import admit_against
from nodeagent.protocol import Command, Event, decode

ANSWER_TIMEOUT_S = 30.0  # per command, on top of the pulses of the commands queued before it


def budget_refusals(fleet: Fleet, nodes: list[str]) -> list[str]:
    """Why starting a heavy job on all of ``nodes`` at once would exceed a chassis's power budget (empty: fine)."""
    return [f"chassis of {d.node}: {r}" for d in fleet.power.values() for r in admit_against(d, set(nodes)).reasons]


def switcher(fleet: Fleet) -> str:
    """The online node that switches slot power; a clear error when there is none."""
    found = [v.name for v in fleet.sorted() if v.online and v.facts and "slot-power" in v.facts.roles]
    if not found:
        raise LookupError(
            "no online node switches slot power (a NanoCluster's slot 1 does, with hardware.slot = 1; "
            'or set [slot_power] enabled = "on" on the node that has the expander)'
        )
    return found[0]


def slots_of(fleet: Fleet, nodes: list[str]) -> dict[str, int]:
    """Each node's slot from its retained facts; a clear error for a node without one."""
    slots = {}
    for node in nodes:
        f = fleet.nodes[node].facts
        if f is None or not f.slot:
            raise LookupError(f"{node} has no slot in its facts; set hardware.slot in its agent.toml")
        slots[node] = f.slot
    return slots


def send(session: Session, to: str, action: str, slots: dict[str, int]) -> dict[str, str]:
    """One ``power`` command per node, to ``to``; returns node -> command id."""
    ids = {}
    for node, slot in slots.items():
        cmd = Command(
            id=new_job_id("power"),
            cmd="power",
            value=action,
            slot=slot,
            sender=session.client_id,
            t=time.time(),
        )
        session.command(session.topics.node_cmd(to), cmd)
        ids[node] = cmd.id
    return ids


def answers(session: Session, to: str, ids: dict[str, str], seconds_each: float) -> dict[str, Event | None]:
    """The terminal event for each command id (None: no answer in time)."""
    waiting = {cid: node for node, cid in ids.items()}
    got: dict[str, Event | None] = dict.fromkeys(ids)
    deadline = time.monotonic() + len(ids) * seconds_each + ANSWER_TIMEOUT_S
    while waiting and (msg := session.get(deadline - time.monotonic())) is not None:
        if msg.topic != session.topics.events(to):
            continue
        try:
            event = decode(msg.payload, Event)
        except ValueError:
            continue
        if event.terminal and event.job in waiting:
            got[waiting.pop(event.job)] = event
    return got
