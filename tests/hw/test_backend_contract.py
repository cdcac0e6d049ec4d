"""One contract for every backend: recorded trees, the simulator, and the real machine when it is a Raspberry Pi."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.hw import RealBackend, SimBackend, SimConfig
from nodeagent.hw.base import Backend, Facts, Sample
from nodeagent.hw.real import SENSORS
from nodeagent.hw.system import BOARDS
from tests.hw.trees import TREES, recorded_backend


def _real_pi_skip_reason() -> str | None:
    """None on a Raspberry Pi, else why the ``real`` backend cannot be tested here."""
    model_file = Path("/proc/device-tree/model")
    try:
        model = model_file.read_bytes().decode(errors="replace").rstrip("\0").strip()
    except OSError as e:
        return f"not a Raspberry Pi: {model_file}: {e.strerror}"
    if "Raspberry Pi" not in model:
        return f"not a Raspberry Pi: {model_file} says {model!r}"
    return None


_REAL_SKIP = _real_pi_skip_reason()
KINDS = [
    *(pytest.param(f"recorded:{name}", id=f"recorded-{name}") for name in TREES),
    pytest.param("sim", id="sim"),
    pytest.param("real", id="real", marks=pytest.mark.skipif(_REAL_SKIP is not None, reason=_REAL_SKIP or "")),
]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    kind: str = request.param
    if kind == "sim":
        made: Backend = SimBackend("node-07", SimConfig(), lambda: 1.7)
    elif kind == "real":
        made = RealBackend("/")
    else:
        made = recorded_backend(kind.removeprefix("recorded:"))
    with made as b:
        yield b


@pytest.fixture
def healthy(request: pytest.FixtureRequest) -> bool:
    """Whether this source is known to be healthy (every sensor readable), so errors must be empty."""
    return request.node.callspec.params["backend"] != "real"


def test_facts_are_sane(backend: Backend) -> None:
    facts = backend.facts()
    assert isinstance(facts, Facts)
    assert facts.board in (*BOARDS, "sim")
    assert facts.model and isinstance(facts.model, str)
    assert isinstance(facts.serial, str)
    assert 1 <= facts.cores <= 1024
    assert 64 <= facts.memory_mb <= 16 * 1024 * 1024
    assert isinstance(facts.cpu, str) and isinstance(facts.hostname, str)
    assert facts == backend.facts()  # stable


def _assert_physical(sample: Sample) -> None:
    if sample.temp_c is not None:
        assert -40.0 <= sample.temp_c <= 125.0
    if sample.freq_mhz is not None:
        assert 100.0 <= sample.freq_mhz <= 6000.0
    if sample.governor is not None:
        assert sample.governor.isprintable() and sample.governor
    if sample.throttled is not None:
        assert 0 <= sample.throttled < 2**32
        assert all(isinstance(n, str) for n in sample.throttle_names)
    if sample.load1 is not None:
        assert 0.0 <= sample.load1 < 10_000 and math.isfinite(sample.load1)
    if sample.mem_total_mb is not None:
        assert sample.mem_total_mb > 0
        assert sample.mem_avail_mb is not None and 0 <= sample.mem_avail_mb <= sample.mem_total_mb
    if sample.fan_duty_pct is not None:
        assert 0.0 <= sample.fan_duty_pct <= 100.0
    if sample.fan_rpm is not None:
        assert sample.fan_rpm >= 0


def test_read_returns_a_sample_at_now(backend: Backend) -> None:
    for now in (1_700_000_000.0, 1_700_000_005.0, 1_700_000_010.5):
        sample = backend.read(now)
        assert isinstance(sample, Sample)
        assert sample.t == now
        _assert_physical(sample)


def test_errors_are_lines_naming_a_sensor(backend: Backend, healthy: bool) -> None:
    for now in (100.0, 105.0):
        sample = backend.read(now)
        assert isinstance(sample.errors, tuple)
        for line in sample.errors:
            assert isinstance(line, str)
            assert line.split(":", 1)[0] in SENSORS, line
        if healthy:
            assert sample.errors == ()


def test_odd_clocks_do_not_raise(backend: Backend) -> None:
    # A clock stepped back, a repeated time and a zero must all still give a sample.
    for now in (1000.0, 1000.0, 10.0, 0.0, 1e12):
        sample = backend.read(now)
        assert sample.t == now
        _assert_physical(sample)


def test_fast_sensors_are_present(backend: Backend, healthy: bool) -> None:
    sample = backend.read(50.0)
    if healthy:
        assert sample.temp_c is not None
        assert sample.freq_mhz is not None
        assert sample.throttled is not None
    assert sample.load1 is not None
    assert sample.mem_total_mb is not None
