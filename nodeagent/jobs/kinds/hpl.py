"""HPL (High-Performance Linpack) jobs: the input file we hand to ``hpcc``/``xhpl`` and the parsers for what they print.

Everything here is pure: functions take and return strings and values. The runner owns the processes and files.

Two programs produce the numbers:

* ``hpcc`` (Debian's ``hpcc`` 1.5.0, which embeds HPL 2.0) reads ``hpccinf.txt`` from its working directory and
  *appends* every run to ``hpccoutf.txt``; :func:`parse_hpcc_output` reads the last run's summary.
* ``xhpl`` (HPL 2.3, as built by top500-benchmark) reads ``HPL.dat`` and prints to stdout;
  :func:`parse_xhpl_output` reads that.

Both read the same 36-line file made by :func:`render_input`.
"""

from __future__ import annotations

import re

from nodeagent.errors import JobFailed
from nodeagent.protocol.jobs import HplParams, HplResult

# ---------------------------------------------------------------------------------------------------------------------
# Parameters and the input file


# Lines 13-31 of the input file: the algorithm choices top500-benchmark's template makes, which HPL encodes as the
# variant "WR11C2R4" (row-major, look-ahead 1, 1ringM broadcast, Crout recursion, 2 divisions, right-looking panels,
# NBMIN 4). Kept as (value, comment) so the numbers stay data and the comments stay ours.
_ALGORITHM_LINES: tuple[tuple[str, str], ...] = (
    ("16.0", "residual threshold: a test passes below it"),
    ("1", "how many panel factorisations follow"),
    ("2", "PFACT: 0 left-looking, 1 Crout, 2 right-looking"),
    ("1", "how many recursion stop sizes follow"),
    ("4", "NBMIN: stop recursing below this many columns"),
    ("1", "how many recursion splits follow"),
    ("2", "NDIV: sub-panels per recursion step"),
    ("1", "how many recursive factorisations follow"),
    ("1", "RFACT: 0 left-looking, 1 Crout, 2 right-looking"),
    ("1", "how many broadcasts follow"),
    ("1", "BCAST: 0 1ring 1 1ringM 2 2ring 3 2ringM 4 long 5 longM"),
    ("1", "how many look-ahead depths follow"),
    ("1", "DEPTH: panels factorised ahead"),
    ("2", "SWAP: 0 binary exchange, 1 spread-roll, 2 mixed"),
    ("64", "column count where mixed swapping changes method"),
    ("0", "L1 stored 0 transposed / 1 as is"),
    ("0", "U stored 0 transposed / 1 as is"),
    ("1", "equilibration 0 off / 1 on"),
    ("8", "buffer alignment in doubles"),
)

# Lines 33-36 are read by hpcc's PTRANS test only (xhpl stops at line 31). Zero extra sizes: PTRANS derives its
# own size from N, and every extra size would add minutes to a run on a Pi.
_PTRANS_LINES: tuple[tuple[str, str], ...] = (
    ("0", "PTRANS: how many extra matrix sizes follow"),
    ("0", "PTRANS: extra matrix sizes (none)"),
    ("0", "PTRANS: how many extra block sizes follow"),
    ("0", "PTRANS: extra block sizes (none)"),
)

_COMMENT_COLUMN = 13  # values left-aligned in a 13-character column, as HPL's own examples lay them out


def _line(value: object, comment: str) -> str:
    return f"{value!s:<{_COMMENT_COLUMN}}{comment}"


def render_input(params: HplParams) -> str:
    """Return the 36-line ``hpccinf.txt`` (also a valid ``HPL.dat``) for exactly one N, one NB and one P x Q grid.

    Raises :class:`JobRejected` if ``params`` are invalid: hpcc would otherwise fall back to its defaults silently.
    """
    params.validate()
    lines = [
        "HPL input written by picluster (hpcc reads it as hpccinf.txt, xhpl as HPL.dat)",
        "one problem size, one block size and one process grid per run",
        _line("HPL.out", "output file name, used only when the next line is neither 6 nor 7"),
        _line(6, "where xhpl writes: 6 stdout, 7 stderr, other a file (hpcc always appends to hpccoutf.txt)"),
        _line(1, "how many matrix sizes follow"),
        _line(params.n, "N: matrix order"),
        _line(1, "how many block sizes follow"),
        _line(params.nb, "NB: block size"),
        _line(0, "process mapping: 0 row-major, 1 column-major"),
        _line(1, "how many process grids follow"),
        _line(params.p, "P: process rows"),
        _line(params.q, "Q: process columns"),
        *(_line(value, comment) for value, comment in _ALGORITHM_LINES),
        "=== line 32 separates the HPL part from hpcc's PTRANS lines below; its text is never read ===",
        *(_line(value, comment) for value, comment in _PTRANS_LINES),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Results


# `W` + order R/C + depth + broadcast 0-5 + RFACT L/C/R + NDIV + PFACT L/C/R + NBMIN (HPL_pdtest.c). The printf fields
# are %1d, a minimum width, so the digits may be several.
_VARIANT = r"W[RC]\d+[0-5][LCR]\d+[LCR]\d+"
_RESULT_RE = re.compile(
    rf"^\s*(?P<variant>{_VARIANT})\s+(?P<n>\d+)\s+(?P<nb>\d+)\s+(?P<p>\d+)\s+(?P<q>\d+)"
    r"\s+(?P<time>\S+)\s+(?P<gflops>\S+)\s*$",
    re.ASCII,
)
# HPL 2.3 prints the residual as %16.8e, HPL 2.0 (inside hpcc) as %16.7f; \S+ takes either, and nan.
_RESIDUAL_RE = re.compile(r"^\s*\|\|Ax-b\|\|_oo/\(eps\*.*?=\s*(?P<residual>\S+)\s+\.+\s+(?P<verdict>PASSED|FAILED)\s*$")
_END_OF_TESTS_RE = re.compile(r"^\s*End of Tests\.\s*$", re.MULTILINE)


def _last_line(text: str) -> str:
    """The last non-empty line, quoted for an error message."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return repr(line.strip())
    return "(none: the output was empty)"


def _not_a_number(raw: str, what: str, text: str) -> JobFailed:
    return JobFailed(f"{what} is {raw!r}, not a number; last output line: {_last_line(text)}")


def _int(raw: str, what: str, text: str) -> int:
    try:
        return int(raw)
    except ValueError:  # also Python's 4300-digit limit on int("...")
        raise _not_a_number(raw, what, text) from None


def _float(raw: str, what: str, text: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise _not_a_number(raw, what, text) from None


def _result_from_lines(lines: list[str], text: str, program: str) -> HplResult:
    """Build a result from the last result line in ``lines`` and the residual line that follows it."""
    found = [(i, m) for i, line in enumerate(lines) if (m := _RESULT_RE.match(line))]
    if not found:
        raise JobFailed(
            f"{program} printed no result line ('WR.. N NB P Q Time Gflops'): HPL did not finish a test; "
            f"last output line: {_last_line(text)}"
        )
    index, m = found[-1]
    residual: float | None = None
    passed = False
    for line in lines[index + 1 :]:
        if rm := _RESIDUAL_RE.match(line):
            residual = _float(rm["residual"], f"{program} residual", text)
            passed = rm["verdict"] == "PASSED"
            break
    return HplResult(
        gflops=_float(m["gflops"], f"{program} Gflops", text),
        n=_int(m["n"], f"{program} N", text),
        nb=_int(m["nb"], f"{program} NB", text),
        p=_int(m["p"], f"{program} P", text),
        q=_int(m["q"], f"{program} Q", text),
        time_s=_float(m["time"], f"{program} time", text),
        residual=residual,
        passed=passed,
        variant=m["variant"],
    )


def parse_xhpl_output(text: str) -> HplResult:
    """Read the result of an ``xhpl`` run from its stdout (HPL 2.3, and the older ``%18.3e``/``%16.7f`` formats).

    Takes the last result line when there are several. Raises :class:`JobFailed` if there is no result line or the
    output stops before ``End of Tests.`` (the run was cut short), quoting the last line xhpl printed.
    """
    result = _result_from_lines(text.splitlines(), text, "xhpl")
    if not _END_OF_TESTS_RE.search(text):
        raise JobFailed(
            f"xhpl output stops before 'End of Tests.': the run was cut short; last output line: {_last_line(text)}"
        )
    return result


# ---------------------------------------------------------------------------------------------------------------------
# hpcc

# The order hpcc 1.5.0 runs its tests in, as seen in real hpccoutf.txt files (tests/data/hpl/). HPL comes last.
# The closing "Summary" block uses the same Begin/End wording but is a report, not a test, so it is not counted.
HPCC_SECTIONS: tuple[str, ...] = (
    "MPIRandomAccess",
    "StarRandomAccess",
    "SingleRandomAccess",
    "MPIRandomAccess_LCG",
    "StarRandomAccess_LCG",
    "SingleRandomAccess_LCG",
    "PTRANS",
    "StarDGEMM",
    "SingleDGEMM",
    "StarSTREAM",
    "SingleSTREAM",
    "MPIFFT",
    "StarFFT",
    "SingleFFT",
    "LatencyBandwidth",
    "HPL",
)

_RUN_START = "This is the DARPA/DOE HPC Challenge Benchmark"
_SECTION_RE = re.compile(r"^\s*(?P<edge>Begin|End) of (?P<name>\S+) section\.\s*$")
_SUMMARY_BEGIN = "Begin of Summary section."
_SUMMARY_END = "End of Summary section."


def _last_run(text: str) -> str:
    """The part of an appended ``hpccoutf.txt`` written by the latest run (the whole text if no banner is found)."""
    start = text.rfind(_RUN_START)
    return text if start < 0 else text[start:]


def parse_hpcc_summary(text: str) -> dict[str, str]:
    """Return the ``key=value`` pairs of the last complete summary block in ``text`` (empty if there is none)."""
    end = text.rfind(_SUMMARY_END)
    begin = text.rfind(_SUMMARY_BEGIN, 0, end) if end >= 0 else -1
    if begin < 0:
        return {}
    summary: dict[str, str] = {}
    for line in text[begin + len(_SUMMARY_BEGIN) : end].splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            summary[key] = value.strip()
    return summary


def _hpl_section_lines(run: str) -> list[str]:
    """Lines of the last HPL section of one run (empty if the run has none)."""
    lines = run.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Begin of HPL section."]
    if not starts:
        return []
    section = lines[starts[-1] + 1 :]
    ends = [i for i, line in enumerate(section) if line.strip() == "End of HPL section."]
    return section[: ends[0]] if ends else section


def _summary_int(summary: dict[str, str], key: str, text: str) -> int:
    return _int(summary[key], f"hpcc summary {key}", text)


def _summary_float(summary: dict[str, str], key: str, text: str) -> float:
    return _float(summary[key], f"hpcc summary {key}", text)


_HPL_KEYS = ("HPL_Tflops", "HPL_time", "HPL_N", "HPL_NB", "HPL_nprow", "HPL_npcol")


def parse_hpcc_output(text: str) -> HplResult:
    """Read the HPL result of the latest run in an ``hpccoutf.txt`` (hpcc appends; earlier runs are ignored).

    Numbers come from the run's summary block (``HPL_Tflops`` x 1000 is Gflops); the residual and its PASSED/FAILED
    verdict from the HPL section's check line. Raises :class:`JobFailed` if the run did not finish or did not run HPL.
    """
    run = _last_run(text)
    summary = parse_hpcc_summary(run)
    if not summary:
        raise JobFailed(
            f"hpcc output has no complete summary section for its latest run: hpcc was stopped or crashed; "
            f"last output line: {_last_line(run)}"
        )
    missing = [key for key in _HPL_KEYS if key not in summary]
    if missing:
        raise JobFailed(f"hpcc did not run HPL: its summary lacks {', '.join(missing)}")
    tflops = _summary_float(summary, "HPL_Tflops", run)
    if tflops < 0:
        raise JobFailed(
            f"hpcc did not run HPL (HPL_Tflops={summary['HPL_Tflops']}): see the HPL section of hpccoutf.txt "
            f"and hpcc's stderr for the reason"
        )
    section = _hpl_section_lines(run)
    residual: float | None = None
    verdict_passed = False
    variant = _variant_from_summary(summary)
    # The summary has the numbers but not the verdict: that is only on the HPL section's check line.
    if any(_RESULT_RE.match(line) for line in section):
        from_lines = _result_from_lines(section, run, "hpcc")
        residual, verdict_passed, variant = from_lines.residual, from_lines.passed, from_lines.variant
    return HplResult(
        gflops=tflops * 1000.0,
        n=_summary_int(summary, "HPL_N", run),
        nb=_summary_int(summary, "HPL_NB", run),
        p=_summary_int(summary, "HPL_nprow", run),
        q=_summary_int(summary, "HPL_npcol", run),
        time_s=_summary_float(summary, "HPL_time", run),
        residual=residual,
        passed=verdict_passed and summary.get("Success") == "1",
        variant=variant,
    )


def _variant_from_summary(summary: dict[str, str]) -> str:
    """HPL's T/V code rebuilt from the summary keys, for runs whose result line is missing."""
    keys = ("HPL_order", "HPL_depth", "HPL_ctop", "HPL_crfact", "HPL_nbdiv", "HPL_cpfact", "HPL_nbmin")
    if not all(key in summary for key in keys):
        return ""
    return "W" + "".join(summary[key] for key in keys)


def hpcc_progress(text: str) -> tuple[int, int, str]:
    """Return (tests finished, tests in a run, name of the test running or last finished) for the latest run.

    Meant for tailing ``hpccoutf.txt`` while hpcc runs; the name is ``""`` before the first test starts.
    """
    finished: set[str] = set()
    current = ""
    for line in _last_run(text).splitlines():
        m = _SECTION_RE.match(line)
        if not m or m["name"] == "Summary":
            continue
        current = m["name"]
        if m["edge"] == "End" and current in HPCC_SECTIONS:
            finished.add(current)
    return len(finished), len(HPCC_SECTIONS), current


def check_matches(asked: HplParams, result: HplResult, program: str = "hpcc") -> None:
    """Raise :class:`JobFailed` if the run solved another problem than the one asked for.

    hpcc does this silently: when ``hpccinf.txt`` cannot be read, is malformed, or asks for a grid larger than the
    MPI ranks started, it runs its built-in defaults and still reports success. xhpl stops on bad input instead,
    so for it a mismatch means the wrong HPL.dat was read.
    """
    fields = (("N", asked.n, result.n), ("NB", asked.nb, result.nb), ("P", asked.p, result.p), ("Q", asked.q, result.q))
    differ = [name for name, want, got in fields if want != got]
    if not differ:
        return
    ran = " ".join(f"{name}={got}" for name, _, got in fields)
    wanted = " ".join(f"{name}={want}" for name, want, _ in fields)
    why = (
        "hpcc ignored hpccinf.txt (unreadable or malformed, or its P x Q grid needs more than the MPI ranks started) "
        "and fell back to its defaults"
        if program == "hpcc"
        else "xhpl read another HPL.dat than the one written for the job"
    )
    raise JobFailed(f"{program} ran {ran} but the job asked for {wanted} ({', '.join(differ)} differ): {why}")
