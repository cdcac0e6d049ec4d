"""Open MPI 4.1's real daemon lines (tests/data/mpi, recorded by scripts/record_orted_argv.py), for the tests that
replay or forge a leader's launch request."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "mpi"


def recorded_lines() -> list[tuple[str, list[str]]]:
    """(which recording, the words mpirun gave its launcher after the host) of every recorded daemon line."""
    out = []
    for path in sorted(DATA.glob("orted_*.jsonl")):
        for i, line in enumerate(path.read_text().splitlines()):
            out.append((f"{path.stem}[{i}]", json.loads(line)[1:]))
    for line in (DATA / "orted_mpirun_options.tsv").read_text().splitlines():
        what, text = line.split("\t")
        out.append((what, [text.split(" ", 1)[1]]))  # what ssh would get: one string after the host
    return out


def value(words: list[str], name: str) -> str:
    """The (unquoted) value of MCA parameter ``name`` in a daemon line."""
    argv = shlex.split(" ".join(words))
    return argv[argv.index(name) + 1]


def replaced(words: list[str], name: str, new: str) -> list[str]:
    """The line with ``name``'s value replaced by ``new``, quoted the way a shell would need it."""
    argv = shlex.split(" ".join(words))
    argv[argv.index(name) + 1] = new
    return [shlex.quote(w) for w in argv]


def member_line(launcher: str, hnp: str = "") -> list[str]:
    """The recorded line of a simulated member (node2, on this machine), for a node whose ``[mpi] launch_agent`` is
    ``launcher``, optionally with another ``orte_hnp_uri`` (``hnp``)."""
    words = replaced(recorded_lines()[0][1], "plm_rsh_agent", launcher)
    return replaced(words, "orte_hnp_uri", hnp) if hnp else words
