"""Read llama-bench results: its markdown table (``-o md``, the default), ``-o json`` and ``-o jsonl``.

Formats (llama.cpp ``tools/llama-bench/llama-bench.cpp``; docs/operations.md cites the lines): markdown columns
``model | size | params | backend | [ngl] | [threads] | ... | test | t/s`` with ``test`` = ``pp512`` | ``tg128`` |
``pp512+tg128`` (+ `` @ d<N>``) and ``t/s`` = ``"%.2f ± %.2f"``, footer ``build: <commit> (<number>)``; JSON objects
carry ``n_prompt``, ``n_gen``, ``n_depth``, ``avg_ts``, ``stddev_ts`` and more, whose set varies by build, so
only those keys are relied on.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from nodeagent.errors import JobFailed

TEST_RE = re.compile(r"^(?:pp(\d+))?(?:\+)?(?:tg(\d+))?(?: @ d(\d+))?$")


@dataclass(frozen=True)
class BenchRow:
    """One llama-bench test: prompt processing (pp), generation (tg) or both (pp+tg), in tokens per second."""

    test: str
    n_prompt: int
    n_gen: int
    n_depth: int
    avg_ts: float
    stddev_ts: float
    model: str = ""
    backend: str = ""


@dataclass(frozen=True)
class BenchResult:
    rows: tuple[BenchRow, ...]
    build: str = ""

    @property
    def pp_ts(self) -> float | None:
        """Prompt tokens per second: the first pure prompt test."""
        return next((r.avg_ts for r in self.rows if r.n_prompt > 0 and r.n_gen == 0), None)

    @property
    def tg_ts(self) -> float | None:
        """Generated tokens per second: the first pure generation test."""
        return next((r.avg_ts for r in self.rows if r.n_gen > 0 and r.n_prompt == 0), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tps": self.pp_ts,
            "gen_tps": self.tg_ts,
            "tests": [asdict(r) for r in self.rows],
            "build": self.build,
        }


def label_for(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    """The ``test`` column llama-bench prints for these sizes."""
    parts = ([f"pp{n_prompt}"] if n_prompt else []) + ([f"tg{n_gen}"] if n_gen else [])
    return "+".join(parts) + (f" @ d{n_depth}" if n_depth else "")


def parse_test(text: str) -> tuple[int, int, int]:
    m = TEST_RE.match(text.strip())
    if not m or not (m.group(1) or m.group(2)):
        raise ValueError(f"not a llama-bench test name: {text!r}")
    return int(m.group(1) or 0), int(m.group(2) or 0), int(m.group(3) or 0)


def parse_markdown(text: str) -> BenchResult:
    header: list[str] | None = None
    rows: list[BenchRow] = []
    build = ""
    for line in text.splitlines():
        stripped = line.strip()
        if m := re.match(r"^build: (\S+) \((\d+)\)$", stripped):
            build = f"{m.group(1)} ({m.group(2)})"
            continue
        if not (stripped.startswith("|") and stripped.endswith("|")):
            continue
        cells = [c.strip() for c in stripped[1:-1].split("|")]
        if header is None:
            if "test" in cells and "t/s" in cells:
                header = cells
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in cells) or len(cells) != len(header):
            continue
        cell = dict(zip(header, cells, strict=True))
        m = re.fullmatch(r"([\d.]+) ± ([\d.]+)", cell["t/s"])
        if not m:
            continue
        n_prompt, n_gen, n_depth = parse_test(cell["test"])
        rows.append(
            BenchRow(
                cell["test"],
                n_prompt,
                n_gen,
                n_depth,
                float(m.group(1)),
                float(m.group(2)),
                cell.get("model", ""),
                cell.get("backend", ""),
            )
        )
    return BenchResult(tuple(rows), build)


def _row(obj: dict[str, Any]) -> BenchRow:
    n_prompt, n_gen, n_depth = int(obj["n_prompt"]), int(obj["n_gen"]), int(obj.get("n_depth") or 0)
    return BenchRow(
        label_for(n_prompt, n_gen, n_depth),
        n_prompt,
        n_gen,
        n_depth,
        float(obj["avg_ts"]),
        float(obj.get("stddev_ts") or 0.0),
        str(obj.get("model_type", "")),
        str(obj.get("backends", "")),
    )


def _build(obj: dict[str, Any]) -> str:
    return f"{obj.get('build_commit', '')} ({obj.get('build_number', '')})" if "build_commit" in obj else ""


def parse_json(text: str) -> BenchResult:
    """``-o json`` (one array) or ``-o jsonl`` (one object per line)."""
    stripped = text.strip()
    if stripped.startswith("["):
        objs = json.loads(stripped[: stripped.rindex("]") + 1])
    else:
        objs = [json.loads(line) for line in stripped.splitlines() if line.strip().startswith("{")]
    if not isinstance(objs, list) or not all(isinstance(o, dict) for o in objs):
        raise ValueError("expected a JSON array of objects or one object per line")
    return BenchResult(tuple(_row(o) for o in objs), _build(objs[0]) if objs else "")


def parse_llama_bench(text: str) -> BenchResult:
    """Any of llama-bench's md, json or jsonl outputs; JobFailed when it holds no test result."""
    stripped = text.strip()
    try:
        result = parse_json(stripped) if stripped[:1] in ("[", "{") else parse_markdown(stripped)
    except (ValueError, KeyError, TypeError) as exc:
        raise JobFailed(f"llama-bench output not understood: {exc}") from None
    if not result.rows:
        raise JobFailed("llama-bench printed no results (see the job's output.log for its errors)")
    return result
