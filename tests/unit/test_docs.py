"""The docs say what the code does: every message field is documented with the right name, and vice versa."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from nodeagent.protocol import ChassisPower, Command, Event, JobSpec, NodeFacts, NvmeStatus, PcieStatus, Telemetry

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _tables(text: str) -> dict[str, list[str]]:
    """Field names of every table under each '### heading' (a second table in a section is '<heading>/2')."""
    tables: dict[str, list[str]] = {}
    heading, current = "", None
    for line in text.splitlines():
        if line.startswith("### "):
            heading, current = line[4:].strip(), None
        elif heading and line.startswith("| field |"):
            key = heading if heading not in tables else f"{heading}/2"
            current = tables.setdefault(key, [])
        elif current is not None and (m := re.match(r"^\| `(\w+)` \|", line)):
            current.append(m.group(1))
        elif not line.startswith("|"):
            current = None
    return tables


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("facts", NodeFacts),
        ("telemetry", Telemetry),
        ("nvme (in telemetry)", NvmeStatus),
        ("pcie (in telemetry)", PcieStatus),
        ("command", Command),
        ("power", ChassisPower),
        ("command/2", JobSpec),
        ("event", Event),
    ],
)
def test_protocol_doc_lists_exactly_the_fields(section: str, cls: type) -> None:
    tables = _tables((DOCS / "protocol.md").read_text())
    assert tables[section] == [f.name for f in dataclasses.fields(cls)]
