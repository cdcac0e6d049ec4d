"""HPL input file and output parsers, checked against real hpcc runs recorded in tests/data/hpl."""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.errors import JobFailed, JobRejected
from nodeagent.jobs.kinds.hpl import (
    HPCC_SECTIONS,
    check_matches,
    hpcc_progress,
    parse_hpcc_output,
    parse_hpcc_summary,
    parse_xhpl_output,
    render_input,
)
from nodeagent.protocol.jobs import HplParams, HplResult

DATA = Path(__file__).resolve().parent.parent / "data" / "hpl"


def read(name: str) -> str:
    return (DATA / name).read_text()


def hpcc_files() -> list[str]:
    return sorted(p.name for p in DATA.glob("*.hpccoutf.txt"))


# ---------------------------------------------------------------------------------------------------------------------
# Recorded hpcc runs: the exact numbers in each file's summary and HPL section.

# file -> (n, nb, p, q, gflops, time_s, residual, variant)
HPCC_EXPECTED: dict[str, tuple[int, int, int, int, float, float, float, str]] = {
    "hpcc_n1000_nb64_1x2.hpccoutf.txt": (1000, 64, 1, 2, 44.3624, 0.0150616, 0.0039875, "WR11C2R4"),
    "hpcc_n2000_nb128_1x1.hpccoutf.txt": (2000, 128, 1, 1, 37.9265, 0.140781, 0.0038412, "WR11C2R4"),
    "hpcc_n2000_nb128_1x2.hpccoutf.txt": (2000, 128, 1, 2, 40.9357, 0.130432, 0.0036790, "WR11C2R4"),
    "hpcc_n3000_nb192_2x1.hpccoutf.txt": (3000, 192, 2, 1, 45.848, 0.392896, 0.0042341, "WR11C2R4"),
    # two runs appended to one file: only the second (N=1600) counts
    "hpcc_two_runs.hpccoutf.txt": (1600, 128, 2, 1, 43.4615, 0.0629179, 0.0036244, "WR11C2R4"),
    # hpcc's own defaults (column-major, NB=80) after it rejected hpccinf.txt
    "hpcc_fallback_malformed.hpccoutf.txt": (3520, 80, 1, 2, 57.6998, 0.504243, 0.0031515, "WC11C2R4"),
    "hpcc_fallback_grid2x2_on_2ranks.hpccoutf.txt": (3520, 80, 1, 2, 63.5241, 0.458011, 0.0031515, "WC11C2R4"),
}

# What the job asked for in the two fallback recordings (the hpccinf.txt each run was given).
FALLBACK_ASKED = {
    "hpcc_fallback_malformed.hpccoutf.txt": HplParams(n=4000, nb=192, p=1, q=2),
    "hpcc_fallback_grid2x2_on_2ranks.hpccoutf.txt": HplParams(n=1500, nb=128, p=2, q=2),
}


def test_every_recording_has_expected_values() -> None:
    assert set(HPCC_EXPECTED) == set(hpcc_files())


@pytest.mark.parametrize("name", sorted(HPCC_EXPECTED))
def test_parse_hpcc_recorded(name: str) -> None:
    n, nb, p, q, gflops, time_s, residual, variant = HPCC_EXPECTED[name]
    result = parse_hpcc_output(read(name))
    assert (result.n, result.nb, result.p, result.q, result.variant) == (n, nb, p, q, variant)
    assert result.gflops == pytest.approx(gflops, rel=1e-12)
    assert result.time_s == time_s
    assert result.residual == residual
    assert result.passed is True


@pytest.mark.parametrize("name", sorted(HPCC_EXPECTED))
def test_hpcc_summary_agrees_with_result_line(name: str) -> None:
    """The summary's HPL_Tflops and the HPL section's Gflops column (3 significant digits) are the same run."""
    text = read(name)
    last_result_line = [line for line in text.splitlines() if re.match(r"W[RC]\d", line)][-1]
    assert parse_hpcc_output(text).gflops == pytest.approx(float(last_result_line.split()[-1]), rel=1e-3)


def test_parse_hpcc_summary_keys() -> None:
    summary = parse_hpcc_summary(read("hpcc_n1000_nb64_1x2.hpccoutf.txt"))
    assert summary["Success"] == "1"
    assert summary["CommWorldProcs"] == "2"
    assert summary["HPL_Tflops"] == "0.0443624"
    assert summary["VersionMajor"] == "1" and summary["VersionMinor"] == "5"
    assert parse_hpcc_summary("no summary here") == {}


def test_two_runs_takes_the_last_and_first_run_alone_is_the_first() -> None:
    text = read("hpcc_two_runs.hpccoutf.txt")
    assert parse_hpcc_summary(text)["HPL_N"] == "1600"
    second_banner = text.rindex("This is the DARPA/DOE HPC Challenge Benchmark")
    first = parse_hpcc_output(text[:second_banner])
    assert (first.n, first.nb, first.p, first.q) == (1200, 96, 1, 2)
    assert first.gflops == pytest.approx(41.2956)


def test_latest_run_cut_short_does_not_report_the_previous_run() -> None:
    text = read("hpcc_two_runs.hpccoutf.txt")
    cut = text[: text.rindex("Begin of HPL section.")]
    with pytest.raises(JobFailed, match="no complete summary"):
        parse_hpcc_output(cut)


@pytest.mark.parametrize("name", sorted(FALLBACK_ASKED))
def test_check_matches_catches_recorded_fallback(name: str) -> None:
    asked = FALLBACK_ASKED[name]
    with pytest.raises(JobFailed) as caught:
        check_matches(asked, parse_hpcc_output(read(name)))
    message = str(caught.value)
    assert message.startswith(f"hpcc ran N=3520 NB=80 P=1 Q=2 but the job asked for N={asked.n} NB={asked.nb} ")
    assert "fell back to its defaults" in message


def test_recorded_malformed_input_differs_from_ours_only_in_line_5() -> None:
    ours = render_input(FALLBACK_ASKED["hpcc_fallback_malformed.hpccoutf.txt"]).splitlines()
    recorded = read("hpcc_fallback_malformed.hpccinf.txt").splitlines()
    assert [i + 1 for i, (a, b) in enumerate(zip(ours, recorded, strict=True)) if a != b] == [5]


@pytest.mark.parametrize("name", sorted(set(HPCC_EXPECTED) - set(FALLBACK_ASKED)))
def test_check_matches_accepts_recorded_runs(name: str) -> None:
    n, nb, p, q, *_ = HPCC_EXPECTED[name]
    check_matches(HplParams(n=n, nb=nb, p=p, q=q), parse_hpcc_output(read(name)))


def _replace_summary_value(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
    assert count == 1
    return new


def test_hpcc_without_hpl_fails() -> None:
    text = _replace_summary_value(read("hpcc_n1000_nb64_1x2.hpccoutf.txt"), "HPL_Tflops", "-1")
    with pytest.raises(JobFailed, match=r"hpcc did not run HPL \(HPL_Tflops=-1\)"):
        parse_hpcc_output(text)


def test_hpcc_summary_without_hpl_keys_fails() -> None:
    text = re.sub(r"^HPL_.*\n", "", read("hpcc_n1000_nb64_1x2.hpccoutf.txt"), flags=re.MULTILINE)
    with pytest.raises(JobFailed, match="hpcc did not run HPL: its summary lacks HPL_Tflops"):
        parse_hpcc_output(text)


def test_hpcc_success_0_is_not_passed() -> None:
    text = _replace_summary_value(read("hpcc_n1000_nb64_1x2.hpccoutf.txt"), "Success", "0")
    result = parse_hpcc_output(text)
    assert result.passed is False and result.residual == 0.0039875


def test_hpcc_failed_residual_is_not_passed() -> None:
    text = read("hpcc_n1000_nb64_1x2.hpccoutf.txt").replace("0.0039875 ...... PASSED", "17.1234567 ...... FAILED")
    result = parse_hpcc_output(text)
    assert result.passed is False and result.residual == 17.1234567


def test_hpcc_bad_number_in_summary_fails() -> None:
    text = _replace_summary_value(read("hpcc_n1000_nb64_1x2.hpccoutf.txt"), "HPL_N", "lots")
    with pytest.raises(JobFailed, match="hpcc summary HPL_N is 'lots', not a number"):
        parse_hpcc_output(text)


# ---------------------------------------------------------------------------------------------------------------------
# Progress while hpcc runs


def _begin_order(text: str) -> list[str]:
    return [name for name in re.findall(r"^Begin of (\S+) section\.$", text, flags=re.MULTILINE) if name != "Summary"]


@pytest.mark.parametrize("name", hpcc_files())
def test_hpcc_sections_are_the_recorded_order(name: str) -> None:
    text = read(name)
    runs = text.count("This is the DARPA/DOE HPC Challenge Benchmark")
    assert _begin_order(text) == list(HPCC_SECTIONS) * runs
    assert hpcc_progress(text) == (len(HPCC_SECTIONS), len(HPCC_SECTIONS), "HPL")


def test_hpcc_progress_at_every_section_edge() -> None:
    text = read("hpcc_n1000_nb64_1x2.hpccoutf.txt")
    total = len(HPCC_SECTIONS)
    assert hpcc_progress("") == (0, total, "")
    assert hpcc_progress(text[: text.index("Begin of")]) == (0, total, "")
    for done, section in enumerate(HPCC_SECTIONS):
        begin = text.index(f"Begin of {section} section.")
        end = text.index(f"End of {section} section.")
        assert hpcc_progress(text[: text.index("\n", begin)]) == (done, total, section)
        assert hpcc_progress(text[: text.index("\n", end)]) == (done + 1, total, section)


def test_hpcc_progress_counts_only_the_latest_run() -> None:
    text = read("hpcc_two_runs.hpccoutf.txt")
    second = text.rindex("This is the DARPA/DOE HPC Challenge Benchmark")
    cut = text.index("End of PTRANS section.", second)
    assert hpcc_progress(text[:cut]) == (6, len(HPCC_SECTIONS), "PTRANS")


# ---------------------------------------------------------------------------------------------------------------------
# xhpl stdout


def test_parse_xhpl_verbatim_2_3() -> None:
    result = parse_xhpl_output(read("xhpl_2.3_4xA53.stdout.txt"))
    assert result == HplResult(
        gflops=4.261,
        n=19000,
        nb=192,
        p=2,
        q=2,
        time_s=1073.27,
        residual=1.18409443e-03,
        passed=True,
        variant="WR11C2R4",
    )


def test_parse_xhpl_pre_2_3_format() -> None:
    result = parse_xhpl_output(read("xhpl_pre2.3_format.stdout.txt"))
    assert result == HplResult(
        gflops=2.115, n=8640, nb=144, p=1, q=4, time_s=203.33, residual=0.0013903, passed=True, variant="WR11C2R4"
    )


def test_parse_xhpl_indented_like_an_ansible_dump() -> None:
    text = "\n".join("        " + line for line in read("xhpl_2.3_4xA53.stdout.txt").splitlines())
    assert parse_xhpl_output(text).gflops == 4.261


def test_parse_xhpl_takes_the_last_result_and_its_own_residual() -> None:
    text = read("xhpl_2.3_4xA53.stdout.txt")
    block_start = text.index("WR11C2R4")
    block_end = text.index("=" * 80, text.index("||Ax-b||_oo/(eps")) + 81
    second = (
        text[block_start:block_end]
        .replace("19000   192", "20000   256")
        .replace("4.2610e+00", "5.0000e+00")
        .replace("1.18409443e-03 ...... PASSED", "2.50000000e+01 ...... FAILED")
    )
    result = parse_xhpl_output(text[:block_end] + second + text[block_end:])
    assert (result.n, result.nb, result.gflops, result.residual, result.passed) == (20000, 256, 5.0, 25.0, False)


def test_parse_xhpl_without_residual_check() -> None:
    text = "\n".join(line for line in read("xhpl_2.3_4xA53.stdout.txt").splitlines() if "||Ax-b||" not in line)
    result = parse_xhpl_output(text)
    assert result.residual is None and result.passed is False


def test_parse_xhpl_cut_short() -> None:
    text = read("xhpl_2.3_4xA53.stdout.txt")
    with pytest.raises(JobFailed, match=r"stops before 'End of Tests\.'.*'Finished      1 tests"):
        parse_xhpl_output(text[: text.index("              1 tests completed")])


def test_parse_xhpl_no_result_line() -> None:
    text = read("xhpl_2.3_4xA53.stdout.txt")
    with pytest.raises(JobFailed, match=r"xhpl printed no result line.*last output line: '-{80}'"):
        parse_xhpl_output(text[: text.index("WR11C2R4")])
    with pytest.raises(JobFailed, match="output was empty"):
        parse_xhpl_output("  \n\n")


# Exact printf formats of HPL 2.3 (HPL_pdtest.c) and of the older releases (Gflops %18.3e, residual %16.7f). Older
# releases also printed one more blank between time and Gflops (seen in hpcc 1.5.0's HPL 2.0 output).
NEW_RESULT = "W%c%1d%c%c%1d%c%1d%12d %5d %5d %5d %18.2f    %19.4e"
OLD_RESULT = "W%c%1d%c%c%1d%c%1d%12d %5d %5d %5d %18.2f     %18.3e"
RESIDUAL_LABEL = "||Ax-b||_oo/(eps*(||A||_oo*||x||_oo+||b||_oo)*N)= "
NEW_RESIDUAL = "%16.8e"
OLD_RESIDUAL = "%16.7f"

blank = st.text(alphabet=" \t", max_size=6)


@st.composite
def hpl_runs(draw: st.DrawFn) -> tuple[str, dict[str, object], bool]:
    """An xhpl result block printed with HPL's own formats, and the values that went into it."""
    old = draw(st.booleans())
    variant_fields = (
        draw(st.sampled_from("RC")),
        draw(st.integers(0, 9)),
        draw(st.sampled_from("012345")),
        draw(st.sampled_from("LCR")),
        draw(st.integers(2, 9)),
        draw(st.sampled_from("LCR")),
        draw(st.integers(1, 99)),
    )
    values = {
        "n": draw(st.integers(1, 10**9)),
        "nb": draw(st.integers(1, 99999)),
        "p": draw(st.integers(1, 99999)),
        "q": draw(st.integers(1, 99999)),
        "time_s": draw(st.floats(0, 1e7, allow_nan=False, allow_subnormal=False)),
        "gflops": draw(st.floats(0, 1e7, allow_nan=False, allow_subnormal=False)),
        "residual": draw(st.floats(0, 1e3, allow_nan=False, allow_subnormal=False)),
    }
    result_format = OLD_RESULT if old else NEW_RESULT
    result = result_format % (
        *variant_fields,
        *(values[k] for k in ("n", "nb", "p", "q", "time_s", "gflops")),
    )
    verdict = "PASSED" if values["residual"] < 16.0 else "FAILED"
    residual = RESIDUAL_LABEL + (OLD_RESIDUAL if old else NEW_RESIDUAL) % values["residual"] + " ...... " + verdict
    values["variant"] = result.split()[0]
    values["passed"] = verdict == "PASSED"
    pad = [draw(blank) for _ in range(4)]
    text = "\n".join(
        [
            "T/V                N    NB     P     Q               Time                 Gflops",
            pad[0] + result + pad[1],
            pad[2] + residual + pad[3],
            "End of Tests.",
        ]
    )
    return text, values, old


@settings(max_examples=300)
@given(hpl_runs())
def test_parse_xhpl_recovers_printf_values(run: tuple[str, dict[str, object], bool]) -> None:
    text, want, old = run
    got = parse_xhpl_output(text)
    assert (got.n, got.nb, got.p, got.q, got.variant, got.passed) == tuple(
        want[k] for k in ("n", "nb", "p", "q", "variant", "passed")
    )
    assert got.time_s == pytest.approx(want["time_s"], abs=0.0051)
    assert got.gflops == pytest.approx(want["gflops"], rel=5e-4 if old else 5e-5, abs=1e-300)
    assert got.residual == pytest.approx(want["residual"], rel=1e-8, abs=5.1e-8 if old else 1e-300)


@settings(max_examples=300)
@given(st.text())
def test_garbage_gives_job_failed_or_a_result(text: str) -> None:
    for parse in (parse_xhpl_output, parse_hpcc_output):
        with contextlib.suppress(JobFailed):
            assert isinstance(parse(text), HplResult)
    done, total, _ = hpcc_progress(text)
    assert 0 <= done <= total


_POOL = sorted(
    {
        line
        for name in ("xhpl_2.3_4xA53.stdout.txt", "hpcc_n1000_nb64_1x2.hpccoutf.txt")
        for line in read(name).splitlines()
    }
)


@settings(max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(_POOL), st.text(max_size=40)), max_size=60))
def test_shuffled_real_lines_never_raise_anything_but_job_failed(lines: list[str]) -> None:
    text = "\n".join(lines)
    for parse in (parse_xhpl_output, parse_hpcc_output):
        with contextlib.suppress(JobFailed):
            parse(text)


@settings(max_examples=200)
@given(st.data())
def test_truncated_outputs_fail_cleanly(data: st.DataObject) -> None:
    xhpl = read("xhpl_2.3_4xA53.stdout.txt")
    cut = data.draw(st.integers(0, xhpl.index("End of Tests.") + len("End of Tests") - 1))
    with pytest.raises(JobFailed):
        parse_xhpl_output(xhpl[:cut])
    hpcc = read("hpcc_n1000_nb64_1x2.hpccoutf.txt")
    cut = data.draw(st.integers(0, hpcc.index("End of Summary section.")))
    with pytest.raises(JobFailed):
        parse_hpcc_output(hpcc[:cut])


# ---------------------------------------------------------------------------------------------------------------------
# Comparing what ran with what was asked

ASKED = HplParams(n=4000, nb=192, p=1, q=2)
FIELDS = {"n": "N", "nb": "NB", "p": "P", "q": "Q"}


@pytest.mark.parametrize(
    "changed", [c for size in range(len(FIELDS) + 1) for c in itertools.combinations(FIELDS, size)], ids=str
)
def test_check_matches_every_combination(changed: tuple[str, ...]) -> None:
    result = HplResult(gflops=1.0, n=4000, nb=192, p=1, q=2, time_s=1.0, residual=0.001, passed=True)
    result = replace(result, **{field: getattr(result, field) + 7 for field in changed})
    if not changed:
        check_matches(ASKED, result)
        return
    with pytest.raises(JobFailed) as caught:
        check_matches(ASKED, result)
    message = str(caught.value)
    ran = f"N={result.n} NB={result.nb} P={result.p} Q={result.q}"
    assert message.startswith(f"hpcc ran {ran} but the job asked for N=4000 NB=192 P=1 Q=2 (")
    assert f"({', '.join(FIELDS[f] for f in changed)} differ)" in message


# ---------------------------------------------------------------------------------------------------------------------
# The input file


def line_value(text: str, line_no: int) -> str:
    """What HPL reads from a line: its first whitespace-separated token (lines numbered from 1)."""
    return text.splitlines()[line_no - 1].split()[0]


def test_render_input_layout() -> None:
    text = render_input(HplParams(n=23552, nb=256, p=2, q=2))
    lines = text.splitlines()
    assert len(lines) == 36 and text.endswith("\n")
    assert [line_value(text, i) for i in (5, 6, 7, 8, 9, 10, 11, 12)] == ["1", "23552", "1", "256", "0", "1", "2", "2"]
    # lines 13-31: threshold and the algorithm of top500-benchmark's HPL.dat (encodes as WR11C2R4)
    algorithm = ["16.0", "1", "2", "1", "4", "1", "2", "1", "1", "1", "1", "1", "1", "2", "64", "0", "0", "1", "8"]
    assert [line_value(text, i) for i in range(13, 32)] == algorithm
    # lines 33-36: no extra PTRANS sizes
    assert [line_value(text, i) for i in (33, 35)] == ["0", "0"]
    # HPL reads lines with fgets(line, 254): a longer line would spill into the next read.
    assert max(len(line) for line in lines) < 253


@given(st.integers(1, 10**7), st.integers(1, 4096), st.integers(1, 999), st.integers(1, 999))
def test_render_input_round_trip(n: int, nb: int, p: int, q: int) -> None:
    nb = min(nb, n)
    text = render_input(HplParams(n=n, nb=nb, p=p, q=q))
    assert [int(line_value(text, i)) for i in (6, 8, 11, 12)] == [n, nb, p, q]
    assert len(text.splitlines()) == 36


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (HplParams(n=0, nb=1, p=1, q=1), "n"),
        (HplParams(n=100, nb=0, p=1, q=1), "nb"),
        (HplParams(n=100, nb=200, p=1, q=1), "nb"),
        (HplParams(n=100, nb=10, p=0, q=1), "p"),
        (HplParams(n=100, nb=10, p=1, q=-2), "q"),
        (HplParams(n=True, nb=1, p=1, q=1), "n"),  # type: ignore[arg-type]
        (HplParams(n=100, nb=10, p=1.0, q=1), "p"),  # type: ignore[arg-type]
    ],
)
def test_invalid_params_are_rejected_by_field(params: HplParams, field: str) -> None:
    with pytest.raises(JobRejected) as caught:
        render_input(params)
    assert caught.value.field == field
    assert field in caught.value.reason


def test_ranks_and_to_dict() -> None:
    assert HplParams(n=1000, nb=100, p=2, q=3).ranks == 6
    result = parse_xhpl_output(read("xhpl_2.3_4xA53.stdout.txt"))
    assert result.to_dict() == {
        "gflops": 4.261,
        "n": 19000,
        "nb": 192,
        "p": 2,
        "q": 2,
        "time_s": 1073.27,
        "residual": 1.18409443e-03,
        "passed": True,
        "variant": "WR11C2R4",
    }
