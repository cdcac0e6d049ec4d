"""Read distributed-llama's ``dllama inference`` summary, in both of its formats.

Since v0.12.0 (``src/dllama.cpp``, PR #156), after the per-token lines::

    Evaluation
       nBatches: 32
        nTokens: 13
       tokens/s: 52.33 (19.11 ms/tok)
    Prediction
        nTokens: 19
       tokens/s: 11.61 (86.13 ms/tok)

Before (PR #136, #64)::

    Generated tokens:    64
    Avg tokens / second: 3.00
    Avg generation time: 333.66 ms

Evaluation is prompt processing; Prediction is generation. The old format reports generation only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from nodeagent.errors import JobFailed


@dataclass(frozen=True)
class DllamaResult:
    gen_tps: float
    gen_tokens: int
    prompt_tps: float | None = None
    prompt_tokens: int | None = None
    batches: int | None = None
    gen_ms_per_token: float | None = None
    prompt_ms_per_token: float | None = None
    format: str = "v0.12"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NEW = re.compile(
    r"^Evaluation\s*\n\s*nBatches:\s*(\d+)\s*\n\s*nTokens:\s*(\d+)\s*\n\s*tokens/s:\s*([\d.]+)\s*\(([\d.]+) ms/tok\)"
    r"\s*\nPrediction\s*\n\s*nTokens:\s*(\d+)\s*\n\s*tokens/s:\s*([\d.]+)\s*\(([\d.]+) ms/tok\)",
    re.MULTILINE,
)
_OLD_TPS = re.compile(r"^Avg tokens / second:\s*([\d.]+)\s*$", re.MULTILINE)
_OLD_TOKENS = re.compile(r"^Generated tokens:\s*(\d+)\s*$", re.MULTILINE)
_OLD_GEN_MS = re.compile(r"^Avg generation time:\s*([\d.]+) ms\s*$", re.MULTILINE)


def parse_dllama(text: str) -> DllamaResult:
    """The last summary in ``text``; JobFailed when there is none."""
    new = list(_NEW.finditer(text))
    if new:
        batches, p_tokens, p_tps, p_ms, g_tokens, g_tps, g_ms = new[-1].groups()
        return DllamaResult(
            gen_tps=float(g_tps),
            gen_tokens=int(g_tokens),
            prompt_tps=float(p_tps),
            prompt_tokens=int(p_tokens),
            batches=int(batches),
            gen_ms_per_token=float(g_ms),
            prompt_ms_per_token=float(p_ms),
        )
    tps = _OLD_TPS.findall(text)
    tokens = _OLD_TOKENS.findall(text)
    if tps and tokens:
        gen_ms = _OLD_GEN_MS.findall(text)
        return DllamaResult(
            gen_tps=float(tps[-1]),
            gen_tokens=int(tokens[-1]),
            gen_ms_per_token=float(gen_ms[-1]) if gen_ms else None,
            format="pre-0.12",
        )
    raise JobFailed("dllama printed no Prediction/Evaluation summary (see the job's output.log for its errors)")
