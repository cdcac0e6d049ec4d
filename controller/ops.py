"""Operator commands that are not jobs: ``fan``, ``identify`` and ``policy``.

``fan`` and ``identify`` publish one command for the whole selection and wait until every node's telemetry or
events show it took effect; ``policy`` reads the retained facts and telemetry only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from controller import report
from controller.dispatch import new_job_id
from controller.fleet import Fleet, NodeView, telemetry_row
from controller.session import Session
from nodeagent.protocol import Command, Event, Telemetry, decode
from nodeagent.protocol.messages import fan_mode

CONFIRM_TIMEOUT_S = 10.0


def send(session: Session, cmd: str, nodes: list[str], value: str = "") -> str:
    """One command for ``nodes`` on the cluster topic; its id (a node's refusal names it)."""
    command = Command(
        id=new_job_id(cmd),
        cmd=cmd,
        nodes=tuple(nodes),
        value=value,  # type: ignore[arg-type]
        sender=session.client_id,
        t=time.time(),
    )
    session.command(session.topics.cluster_cmd(), command)
    return command.id


def confirm_fan(
    session: Session, nodes: list[str], value: str, cmd_id: str = "", timeout_s: float = CONFIRM_TIMEOUT_S
) -> dict[str, str]:
    """Wait for telemetry with the new fan mode from every node; returns the nodes that did not confirm, each with
    why (``no confirmation``, or the node's refusal of the command ``cmd_id``)."""
    want = str(fan_mode(value))

    def took(leaf: str, payload: bytes) -> bool:
        return leaf == "telemetry" and decode(payload, Telemetry).fan_mode == want

    return _confirm(session, nodes, cmd_id, took, timeout_s)


def confirm_identify(
    session: Session, nodes: list[str], cmd_id: str = "", timeout_s: float = CONFIRM_TIMEOUT_S
) -> dict[str, str]:
    def took(leaf: str, payload: bytes) -> bool:
        return leaf == "events" and bool(decode(payload, Event).data.get("identify"))

    return _confirm(session, nodes, cmd_id, took, timeout_s)


def _confirm(
    session: Session, nodes: list[str], cmd_id: str, took: Callable[[str, bytes], bool], timeout_s: float
) -> dict[str, str]:
    waiting = dict.fromkeys(nodes, "no confirmation")
    deadline = time.monotonic() + timeout_s
    while waiting and (msg := session.get(deadline - time.monotonic())) is not None:
        parsed = session.topics.parse(msg.topic)
        if not parsed or parsed[0] not in waiting:
            continue
        try:
            if took(parsed[1], msg.payload):
                del waiting[parsed[0]]
            elif parsed[1] == "events" and cmd_id:
                event = decode(msg.payload, Event)
                if event.job == cmd_id and session.refused_ours(event):
                    waiting[parsed[0]] = f"refused: {event.reason}"
                    if all(why != "no confirmation" for why in waiting.values()):
                        break
        except ValueError:
            continue
    return dict(sorted(waiting.items()))


def policy_rows(views: list[NodeView]) -> list[dict[str, Any]]:
    """Each node's effective thresholds (from its facts) and its guard's state now (from its telemetry)."""
    keys = ("guard", "temp_c", "fan_mode", "fan_duty_pct", "job", "job_frozen", "freq_cap_mhz")
    return [
        {
            "node": v.name,
            "status": v.status,
            **telemetry_row(v.telemetry, keys),
            "policy": v.facts.policy if v.facts else {},
        }
        for v in views
    ]


def _policy(view: NodeView) -> dict[str, Any]:
    return view.facts.policy if view.facts else {}


def policy_table(rows: list[dict[str, Any]]) -> report.Table:
    cols = ("NODE", "GUARD", "TEMP", "FAN", "WARM", "HOT/RESUME", "CRITICAL", "START MAX", "FAN CURVE", "CAP", "JOB")
    table = report.table(*cols)
    for r in rows:
        g, gate, fan = (r["policy"].get(k, {}) for k in ("guard", "gate", "fan"))
        curve = " ".join(f"{p['temp_c']:g}:{p['duty_pct']:g}%" for p in fan.get("points", ()))
        duty = "-" if r["fan_duty_pct"] is None else f"{r['fan_duty_pct']:.0f}%"
        table.add_row(
            r["node"],
            r["guard"] or r["status"],
            "-" if r["temp_c"] is None else f"{r['temp_c']:.1f}°C",
            f"{duty} ({r['fan_mode']})" if r["fan_mode"] else "-",
            f"{g.get('warm_c', '-')}°C",
            f"{g.get('hot_c', '-')}/{g.get('resume_c', '-')}°C",
            f"{g.get('critical_c', '-')}°C",
            f"{gate.get('start_max_c', '-')}°C",
            curve or "-",
            "-" if r["freq_cap_mhz"] is None else f"{r['freq_cap_mhz']:.0f} MHz",
            (r["job"] or "-") + (" (frozen)" if r["job_frozen"] else ""),
        )
    return table


def budget_lines(fleet: Fleet) -> list[str]:
    """One line per chassis power budget: the measurement against the budget, the cap and the busy nodes."""
    lines = []
    for d in sorted(fleet.power.values(), key=lambda d: d.node):
        measured = "unmeasured" if d.measured_w is None else f"{d.measured_w:.1f} W ({d.source})"
        cap = f"cap {d.cap_khz // 1000} MHz" if d.cap_khz else "no cap"
        busy = ", ".join(d.busy) or "none"
        lines.append(
            f"chassis of {d.node}: {measured} of {d.budget_w:g} W budget, estimate {d.estimated_w:.1f} W, {cap}, "
            f"busy: {busy}"
        )
    return lines


def print_policy(fleet: Fleet, nodes: list[str], as_json: bool) -> None:
    rows = policy_rows([fleet.nodes[n] for n in nodes])
    if as_json:
        for row in rows:  # the power budget of the chassis the node belongs to
            chassis = [d for d in fleet.power.values() if row["node"] in (d.node, *d.nodes)]
            row["power_budget"] = dataclasses.asdict(chassis[0]) if chassis else None
        report.print_json(rows)
    else:
        report.say(policy_table(rows))
        for line in budget_lines(fleet):
            report.say(line)
