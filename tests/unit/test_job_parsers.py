"""Parsers of stress-ng, llama-bench and dllama output: recorded outputs (tests/data/jobs/README.md says how each
was made) and hypothesis round trips through the printers' own formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import JobFailed
from nodeagent.jobs.kinds.dllama_parse import parse_dllama
from nodeagent.jobs.kinds.llama_parse import label_for, parse_llama_bench
from nodeagent.jobs.kinds.stress import parse_metrics_brief, parse_yaml_metrics

DATA = Path(__file__).resolve().parents[1] / "data" / "jobs"


def read(name: str) -> str:
    return (DATA / name).read_text()


# --- stress-ng ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["stress-ng_0.15.06_cpu2_3s", "stress-ng_0.15.06_matrix1_vm1_2s"])
def test_stress_yaml_and_metrics_brief_agree(stem: str) -> None:
    yaml = parse_yaml_metrics(read(f"{stem}.yaml"))
    brief = parse_metrics_brief(read(f"{stem}.stdout.txt"))
    assert [m.stressor for m in yaml] == [m.stressor for m in brief] and yaml
    for y, b in zip(yaml, brief, strict=True):
        assert y.bogo_ops == b.bogo_ops
        assert y.bogo_ops_per_s == pytest.approx(b.bogo_ops_per_s, abs=0.01)  # the text rounds to 2 places
        assert y.real_time_s == pytest.approx(b.real_time_s, abs=0.01)


def test_stress_recorded_values() -> None:
    (cpu,) = parse_yaml_metrics(read("stress-ng_0.15.06_cpu2_3s.yaml"))
    assert cpu.stressor == "cpu" and cpu.bogo_ops > 1000 and 2.9 < cpu.real_time_s < 3.2
    matrix, vm = parse_yaml_metrics(read("stress-ng_0.15.06_matrix1_vm1_2s.yaml"))
    assert (matrix.stressor, vm.stressor) == ("matrix", "vm") and vm.bogo_ops == 0


STRESSOR = st.sampled_from(["cpu", "matrix", "vm", "stream", "cache", "memrate"])
POS = st.floats(min_value=0, max_value=1e7, allow_nan=False)


@given(st.lists(st.tuples(STRESSOR, st.integers(0, 10**9), POS, POS, POS, POS, POS), min_size=1, max_size=4))
def test_stress_round_trip_through_both_formats(rows: list[tuple[str, int, float, float, float, float, float]]) -> None:
    # stress-ng's printers: "%-13s %9lu %9.2f %9.2f %9.2f %12.2f %14.2f" after "stress-ng: metrc: [pid] ", and a YAML
    # list of maps with "%f" values.
    text = "\n".join(
        f"stress-ng: metrc: [42] {s:<13s} {ops:9d} {real:9.2f} {usr:9.2f} {sys_:9.2f} {rate:12.2f} {cpu:14.2f}"
        for s, ops, real, usr, sys_, rate, cpu in rows
    )
    yaml = (
        "---\nsystem-info:\n      cpus: 4\n\nmetrics:\n"
        + "".join(
            f"    - stressor: {s}\n      bogo-ops: {ops}\n      bogo-ops-per-second-usr-sys-time: {cpu:f}\n"
            f"      bogo-ops-per-second-real-time: {rate:f}\n      wall-clock-time: {real:f}\n"
            f"      user-time: {usr:f}\n"
            f"      system-time: {sys_:f}\n\n"
            for s, ops, real, usr, sys_, rate, cpu in rows
        )
        + "...\n"
    )
    brief, full = parse_metrics_brief(text), parse_yaml_metrics(yaml)
    for b, y, (s, ops, real, _usr, _sys, rate, _cpu) in zip(brief, full, rows, strict=True):
        assert b.stressor == y.stressor == s and b.bogo_ops == y.bogo_ops == ops
        assert b.bogo_ops_per_s == pytest.approx(rate, abs=0.006) and y.bogo_ops_per_s == pytest.approx(rate, abs=1e-6)
        assert y.real_time_s == pytest.approx(real, abs=1e-6)


# --- llama-bench ------------------------------------------------------------------------------------------------
def test_llama_bench_markdown_from_a_cm5() -> None:
    result = parse_llama_bench(read("llama-bench_beowulf6_cm5.md.txt"))
    assert (result.pp_ts, result.tg_ts) == (15.08, 6.07)
    assert [r.test for r in result.rows] == ["pp512", "tg128", "pp512+tg128"]
    assert result.rows[2].n_prompt == 512 and result.rows[2].n_gen == 128 and result.rows[1].stddev_ts == 0.01
    assert result.rows[0].model == "llama 3B Q4_K - Medium" and result.rows[0].backend == "RPC"
    assert result.build == "792b44f2 (6319)"


@pytest.mark.parametrize("text", ["", "error: failed to load model\n", "| model | test | t/s |\n| --- | --- | --- |\n"])
def test_llama_bench_without_results_fails_the_job(text: str) -> None:
    with pytest.raises(JobFailed, match="llama-bench printed no results"):
        parse_llama_bench(text)


TESTS = st.tuples(st.integers(0, 8192), st.integers(0, 2048), st.integers(0, 8192)).filter(lambda t: t[0] or t[1])
RATE = st.floats(min_value=0, max_value=1e5, allow_nan=False)


@given(st.lists(st.tuples(TESTS, RATE, RATE), min_size=1, max_size=6), st.sampled_from(["CPU", "RPC", "BLAS,RPC"]))
def test_llama_bench_round_trip_markdown_and_json(rows: list, backend: str) -> None:
    # The markdown printer: cells padded, t/s "%.2f ± %.2f"; the JSON printer: one object per test.
    md = [
        "| model | size | params | backend | threads | test | t/s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    objs = []
    for (pp, tg, depth), avg, sd in rows:
        md.append(
            f"| llama 1B F16 | 2.30 GiB | 1.24 B | {backend} | 4 | {label_for(pp, tg, depth):>15} "
            f"| {avg:.2f} ± {sd:.2f} |"
        )
        objs.append(
            {
                "build_commit": "abc",
                "build_number": 1,
                "model_type": "llama 1B F16",
                "backends": backend,
                "n_prompt": pp,
                "n_gen": tg,
                "n_depth": depth,
                "avg_ts": avg,
                "stddev_ts": sd,
                "new_key": [1],
            }
        )
    text_md = "\n".join(md) + "\n\nbuild: abc (1)\n"
    for parsed in (
        parse_llama_bench(text_md),
        parse_llama_bench(json.dumps(objs, indent=2)),
        parse_llama_bench("\n".join(json.dumps(o) for o in objs)),
    ):
        assert [(r.n_prompt, r.n_gen, r.n_depth) for r in parsed.rows] == [t for t, _, _ in rows]
        assert parsed.build == "abc (1)"
        for row, (_, avg, sd) in zip(parsed.rows, rows, strict=True):
            assert row.avg_ts == pytest.approx(avg, abs=0.006) and row.stddev_ts == pytest.approx(sd, abs=0.006)
        pure_pp = next((avg for (pp, tg, _), avg, _ in rows if pp and not tg), None)
        assert (parsed.pp_ts is None) == (pure_pp is None)


# --- dllama -----------------------------------------------------------------------------------------------------
def test_dllama_new_format() -> None:
    r = parse_dllama(read("dllama_v0.12_inference.stdout.txt"))
    assert (r.prompt_tps, r.prompt_tokens, r.batches, r.gen_tps, r.gen_tokens) == (19.73, 13, 32, 11.76, 4)
    assert (r.prompt_ms_per_token, r.gen_ms_per_token, r.format) == (50.69, 85.0, "v0.12")


def test_dllama_old_format_reports_generation_only() -> None:
    r = parse_dllama(read("dllama_pre0.12_inference.stdout.txt"))
    assert (r.gen_tps, r.gen_tokens, r.gen_ms_per_token, r.prompt_tps, r.format) == (3.0, 64, 333.66, None, "pre-0.12")


def test_dllama_without_a_summary_fails_the_job() -> None:
    with pytest.raises(JobFailed, match="no Prediction/Evaluation summary"):
        parse_dllama("🔶 Pred   62 ms Sync   24 ms | Sent    28 kB Recv    73 kB |  I\n")


@given(st.integers(1, 10**4), st.integers(1, 10**5), RATE, RATE, st.integers(1, 10**5), RATE, RATE)
def test_dllama_round_trip(
    batches: int, p_tok: int, p_tps: float, p_ms: float, g_tok: int, g_tps: float, g_ms: float
) -> None:
    # dllama.cpp's printf formats, verbatim.
    text = "Hello\n🔶 Pred   62 ms Sync   24 ms | Sent    28 kB Recv    73 kB |  x\n"
    text += "\nEvaluation\n   nBatches: %d\n    nTokens: %d\n   tokens/s: %3.2f (%3.2f ms/tok)\n" % (  # noqa: UP031
        batches,
        p_tok,
        p_tps,
        p_ms,
    )
    text += "Prediction\n    nTokens: %d\n   tokens/s: %3.2f (%3.2f ms/tok)\n" % (g_tok, g_tps, g_ms)  # noqa: UP031
    r = parse_dllama(text)
    assert (r.batches, r.prompt_tokens, r.gen_tokens) == (batches, p_tok, g_tok)
    assert r.prompt_tps == pytest.approx(p_tps, abs=0.006) and r.gen_tps == pytest.approx(g_tps, abs=0.006)
    assert r.gen_ms_per_token == pytest.approx(g_ms, abs=0.006)


@pytest.mark.parametrize("backend", ["cpu", "rpc"])
def test_llama_bench_recorded_markdown_and_json_agree(backend: str) -> None:
    md = parse_llama_bench(read(f"llama-bench_0.3.36_tiny_{backend}.md.txt"))
    js = parse_llama_bench(read(f"llama-bench_0.3.36_tiny_{backend}.json.txt"))
    assert [(r.n_prompt, r.n_gen) for r in md.rows] == [(r.n_prompt, r.n_gen) for r in js.rows]
    assert md.rows[0].test == js.rows[0].test == "pp64" and md.rows[1].test == "tg16"
    assert md.build == js.build == "unknown (0)"
    assert {r.backend for r in md.rows} == {r.backend for r in js.rows} == {backend.upper()}
    assert md.pp_ts and md.tg_ts and js.pp_ts and js.tg_ts  # separate runs: the figures differ, both are there


def test_llama_bench_recorded_jsonl_with_a_pp_tg_test() -> None:
    result = parse_llama_bench(read("llama-bench_0.3.36_tiny_cpu.jsonl.txt"))
    assert [r.test for r in result.rows] == ["pp64", "tg16", "pp64+tg16"]
    md = parse_llama_bench(read("llama-bench_0.3.36_tiny_cpu.md.txt"))
    assert [r.test for r in md.rows] == ["pp64", "tg16", "pp64+tg16"]
    assert result.pp_ts is not None and result.pp_ts > 0 and result.tg_ts is not None and result.tg_ts > 0
