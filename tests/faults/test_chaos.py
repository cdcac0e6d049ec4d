"""The chaos run's short profile (the long one is bench/faults.py): see tests/faults/chaos.py for what it does
and checks. ``PICLUSTER_CHAOS_SEED=N`` replays a schedule; a failure names its seed."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.faults.chaos import SHORT, Chaos

pytestmark = pytest.mark.slow


def test_chaos_loses_no_result_and_runs_no_job_twice(tmp_path: Path, cluster: str) -> None:
    seed = int(os.environ.get("PICLUSTER_CHAOS_SEED") or random.randrange(1 << 32))
    with Chaos(SHORT, seed, tmp_path, cluster) as chaos:
        outcome = chaos.run()
    print(outcome.summary(), *outcome.problems, sep="\n")
    replay = f"replay with: PICLUSTER_CHAOS_SEED={seed} pytest tests/faults/test_chaos.py"
    assert not outcome.problems, f"{outcome.summary()}\n{replay}\n" + "\n".join(outcome.problems)
    assert len(outcome.jobs) == SHORT.jobs
