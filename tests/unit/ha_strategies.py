"""hypothesis strategies for a node's telemetry and facts (shared by the Home Assistant and Prometheus tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from nodeagent.protocol import NodeFacts, NvmeStatus, PcieStatus, Telemetry

names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
finite = st.floats(-50, 200, allow_nan=False, allow_infinity=False)
counts = st.one_of(st.none(), st.integers(0, 2**64 - 1))
opt = st.none

nvme = st.builds(
    NvmeStatus,
    device=st.sampled_from(["nvme0", "nvme1", "nvme2"]),
    present=st.booleans(),
    temp_c=st.one_of(opt(), finite),
    critical_warning=st.integers(0, 255),
    available_spare_pct=st.one_of(opt(), st.integers(0, 255)),
    percentage_used_pct=st.one_of(opt(), st.integers(0, 255)),
    media_errors=counts,
    smart_t=st.one_of(opt(), st.floats(0, 2e9)),
)
# Per-type AER counts as a node sends them: the kernel's names (current and 4.19 forms), counts above zero.
aer_type_names = st.sampled_from(["RxErr", "BadTLP", "Timeout", "CmpltTO", "UnsupReq", "SDES", "Bad TLP", "ECRC"])
aer_types = st.dictionaries(
    st.sampled_from(["correctable", "nonfatal", "fatal"]),
    st.dictionaries(aer_type_names, st.integers(1, 2**64 - 1), min_size=1, max_size=4),
    max_size=3,
)
pcie = st.builds(
    PcieStatus,
    device=st.from_regex(r"000[01]:0[01]:00\.[0-3]", fullmatch=True),
    degraded=st.booleans(),
    aer_correctable=counts,
    aer_nonfatal=counts,
    aer_fatal=counts,
    aer_types=aer_types,
)
telemetry = st.builds(
    Telemetry,
    node=names,
    seq=st.integers(0, 2**40),
    t=st.floats(0, 4e9),
    temp_c=st.one_of(opt(), finite),
    freq_mhz=st.one_of(opt(), st.floats(0, 4000)),
    throttled=st.one_of(opt(), st.integers(0, 2**32 - 1)),
    load1=st.one_of(opt(), st.floats(0, 64)),
    mem_total_mb=st.one_of(opt(), st.integers(0, 2**20)),
    mem_avail_mb=st.one_of(opt(), st.integers(0, 2**20)),
    fan_duty_pct=st.one_of(opt(), st.floats(0, 100)),
    fan_rpm=st.one_of(opt(), st.integers(0, 20000)),
    power_w=st.one_of(opt(), st.floats(0, 50)),
    nvme=st.lists(nvme, max_size=3, unique_by=lambda d: d.device).map(tuple),
    pcie=st.lists(pcie, max_size=3, unique_by=lambda d: d.device).map(tuple),
    guard=st.sampled_from(["normal", "warm", "hot", "critical"]),
    fan_mode=st.one_of(st.just("auto"), st.floats(0, 100).map(str)),
    job=st.one_of(opt(), names),
    job_frozen=st.booleans(),
    errors=st.lists(st.text(max_size=20), max_size=2).map(tuple),
)
facts = st.builds(
    NodeFacts,
    node=names,
    agent_version=st.just("0.1.0"),
    board=st.sampled_from(["compute-blade", "nanocluster", "cm5-io-board", "pi5", "generic", "sim"]),
    model=st.sampled_from(["Raspberry Pi Compute Module 5 Rev 1.0", "", "Some PC"]),
    serial=st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{8,16}", fullmatch=True)),
    cores=st.integers(1, 8),
    memory_mb=st.integers(512, 16384),
    slot=st.one_of(opt(), st.integers(1, 7)),
    sim=st.booleans(),
)
