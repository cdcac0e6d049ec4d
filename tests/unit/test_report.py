"""report.py's own layout of plain tables (what a 1,000-row ``nodes`` prints) against rich's, and plain lines."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller import report
from controller.dispatch import NodeRun

CELL = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), max_size=12).map(str.strip)


def rich_text(table: Table, width: int = 200) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False).print(table)
    return [line.rstrip() for line in buf.getvalue().splitlines()]


@given(st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=8))
def test_plain_tables_are_laid_out_as_rich_lays_them_out(rows: list[tuple[str, str, str]]) -> None:
    table = Table(box=None, pad_edge=False)
    for col, justify in (("NODE", "left"), ("TEMP", "right"), ("NOTE °C", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    buf = io.StringIO()
    report.print_table(table, Console(file=buf, width=200))
    assert report.plain_table(table) is not None  # the plain path, not rich's
    assert buf.getvalue().splitlines() == rich_text(table)


def test_a_table_that_is_not_plain_goes_to_rich() -> None:
    boxed = Table()
    boxed.add_column("A")
    boxed.add_row("x")
    styled = Table(box=None)
    styled.add_column("A")
    styled.add_row(Text("x", style="bold"))
    assert report.plain_table(boxed) is None and report.plain_table(styled) is None
    buf = io.StringIO()
    report.print_table(styled, Console(file=buf, width=80))
    assert buf.getvalue().split() == ["A", "x"]


def test_a_results_table_of_a_thousand_nodes_prints_every_row() -> None:
    runs = [NodeRun(f"sim{i}", state="finished", result={"passed": True, "gflops": 1.5}) for i in range(1, 1051)]
    table, total = report.hpl_results_table(runs)
    buf = io.StringIO()
    report.print_table(table, Console(file=buf, width=200))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1051 and lines[1050].startswith("sim1050  PASSED") and total == 1575.0


def test_a_line_is_printed_as_it_is_brackets_included() -> None:
    buf = io.StringIO()
    run = NodeRun("n1", state="rejected", reason="jobs.template[1].argv: [/bold] not allowed")
    report.line(Console(file=buf), report.run_line(run))
    assert buf.getvalue() == "n1: rejected: jobs.template[1].argv: [/bold] not allowed\n"
