"""PCIe link and AER counters: the parsers in every kernel format, and PcieMonitor on the recorded trees."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.hw.pcie import (
    LINK_TYPES,
    MAX_AER_COUNTERS,
    MAX_AER_NAME,
    AerCounts,
    PcieLink,
    PcieMonitor,
    aer_problems,
    aer_total,
    aer_types,
    parse_aer_counters,
    parse_link_speed,
    parse_link_width,
    type_increase,
)
from nodeagent.hw.root import SysfsRoot
from tests.hw.trees import DATA

CM5 = "cm5-nanocluster"
CM5_AER = "cm5-aer"  # cm5-nanocluster with errors of every severity (tests/data/sysfs/README.md)
PI5 = "pi5-hwmon-only"
PORT = "sys/bus/pci/devices/0001:00:00.0"
NVME = "sys/bus/pci/devices/0001:01:00.0"
NVME_DIR = "sys/devices/platform/axi/1000110000.pcie/pci0001:00/0001:00:00.0/0001:01:00.0"
TreeCopy = Callable[[str], Path]


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.unlink()  # replace rather than rewrite: the recorded file may be read-only
    path.write_text(text)


def _correctable(rx_err: int, bad_tlp: int = 0, timeout: int = 0) -> str:
    """An aer_dev_correctable file as current kernels write it."""
    counts = {"RxErr": rx_err, "BadTLP": bad_tlp, "BadDLLP": 0, "Rollover": 0, "Timeout": timeout}
    counts |= {"NonFatalErr": 0, "CorrIntErr": 0, "HeaderOF": 0}
    return "".join(f"{k} {v}\n" for k, v in counts.items()) + f"TOTAL_ERR_COR {sum(counts.values())}\n"


# --- link speed and width -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gts"),
    [
        ("2.5 GT/s PCIe\n", 2.5),
        ("5.0 GT/s PCIe\n", 5.0),
        ("8.0 GT/s PCIe\n", 8.0),
        ("16.0 GT/s PCIe\n", 16.0),
        ("64.0 GT/s PCIe\n", 64.0),
        ("2.5 GT/s\n", 2.5),  # kernels up to 5.6
        ("5 GT/s\n", 5.0),
        ("8 GT/s\n", 8.0),
        ("Unknown\n", None),  # link down
        ("Unknown speed\n", None),
    ],
)
def test_link_speed(text: str, gts: float | None) -> None:
    assert parse_link_speed(text) == gts


@given(st.sampled_from([2.5, 5.0, 8.0, 16.0, 32.0, 64.0, 128.0]), st.booleans())
def test_link_speed_round_trip(gts: float, new_kernel: bool) -> None:
    text = f"{gts:.1f} GT/s PCIe\n" if new_kernel else f"{gts:g} GT/s\n"
    assert parse_link_speed(text) == gts


@given(st.text(max_size=30))
def test_link_speed_garbage_is_a_value_error(text: str) -> None:
    try:
        gts = parse_link_speed(text)
    except ValueError as e:
        assert "expected a link speed such as '5.0 GT/s PCIe'" in str(e)
        return
    assert gts is None or gts >= 0


@given(st.integers(0, 32))
def test_link_width_round_trip(width: int) -> None:
    assert parse_link_width(f"{width}\n") == width


@pytest.mark.parametrize("text", ["", "x1", "-1", "33", "1.0", "٣"])
def test_link_width_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a link width of 0-32 lanes"):
        parse_link_width(text)


def test_link_degraded() -> None:
    assert PcieLink(5.0, 8.0, 1, 1).degraded  # Gen 3 asked for, Gen 2 trained
    assert PcieLink(5.0, 5.0, 1, 4).degraded  # narrower
    assert PcieLink(None, 5.0, 0, 1).degraded  # link down
    assert not PcieLink(5.0, 5.0, 4, 4).degraded
    assert not PcieLink(None, None, 1, 1).degraded  # nothing known to compare
    assert str(PcieLink(5.0, 8.0, 1, 1)) == "5 GT/s x1 (max 8 GT/s x1)"


# --- AER counters ---------------------------------------------------------------------------------------------------

# Names as kernels write them: words of letters, digits and _ separated by single spaces ("RELAY_NUM Rollover").
_WORD = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
_NAME = st.lists(_WORD, min_size=1, max_size=4).map(" ".join).filter(lambda n: not n.startswith("TOTAL_ERR_"))
_COUNT = st.integers(0, 2**58)  # a file of up to 25 of them still totals a u64


@given(st.dictionaries(_NAME, _COUNT, max_size=25), st.sampled_from(["COR", "FATAL", "NONFATAL"]), st.booleans())
def test_aer_round_trip(counts: dict[str, int], severity: str, with_total: bool) -> None:
    text = "".join(f"{name} {count}\n" for name, count in counts.items())
    total = sum(counts.values())
    if with_total:
        text += f"TOTAL_ERR_{severity} {total}\n"
    parsed = parse_aer_counters(text)
    assert parsed == (counts | {f"TOTAL_ERR_{severity}": total} if with_total else counts)
    assert list(parsed)[: len(counts)] == list(counts)  # file order kept
    assert aer_total(parsed) == total


# The correctable names as 4.19 and current kernels write them (drivers/pci/pcie/aer.c), in bit order.
KERNEL_NAMES = {
    "long": [
        "Receiver Error",
        "Bad TLP",
        "Bad DLLP",
        "RELAY_NUM Rollover",
        "Replay Timer Timeout",
        "Advisory Non-Fatal",
        "Corrected Internal Error",
        "Header Log Overflow",
    ],
    "short": ["RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout", "NonFatalErr", "CorrIntErr", "HeaderOF"],
}


@given(st.sampled_from(sorted(KERNEL_NAMES)), st.lists(_COUNT, min_size=8, max_size=8))
def test_aer_kernel_names_round_trip(style: str, counts: list[int]) -> None:
    names = KERNEL_NAMES[style]
    text = "".join(f"{n} {c}\n" for n, c in zip(names, counts, strict=True)) + f"TOTAL_ERR_COR {sum(counts)}\n"
    parsed = parse_aer_counters(text)
    assert parsed == {**dict(zip(names, counts, strict=True)), "TOTAL_ERR_COR": sum(counts)}
    assert aer_total(parsed) == sum(counts)


def test_aer_total_line_wins_over_the_sum() -> None:
    # Counters of bits that have no name are in the total but not in any line.
    assert aer_total(parse_aer_counters("RxErr 1\nBadTLP 1\nTOTAL_ERR_COR 5\n")) == 5


def test_aer_long_names_4_19() -> None:
    text = (DATA / PI5 / NVME / "aer_dev_correctable").read_text()
    parsed = parse_aer_counters(text)
    assert parsed["Receiver Error"] == 2
    assert parsed["RELAY_NUM Rollover"] == 0
    assert parsed["Replay Timer Timeout"] == 0
    assert parsed["TOTAL_ERR_COR"] == 2
    assert len(parsed) == 9


@given(st.text(max_size=200))
def test_aer_garbage_is_a_value_error(text: str) -> None:
    try:
        parsed = parse_aer_counters(text)
    except ValueError as e:
        assert str(e).startswith("expected '<name> <count>', got ")
        return
    assert all(isinstance(v, int) and v >= 0 and k for k, v in parsed.items())


@pytest.mark.parametrize("line", ["RxErr", "RxErr -1", "RxErr 1.5", " 5", "RxErr 0x10", "RxErr ５"])
def test_aer_rejects(line: str) -> None:
    with pytest.raises(ValueError, match=r"expected '<name> <count>', got"):
        parse_aer_counters(f"BadTLP 0\n{line}\n")


# --- PcieMonitor on the recorded trees ------------------------------------------------------------------------------


def test_cm5_tree() -> None:
    reading = PcieMonitor(SysfsRoot(DATA / CM5)).read(100.0)
    assert reading.t == 100.0
    assert reading.errors == reading.events == ()
    port, nvme, _, rp1 = reading.devices
    assert [d.bdf for d in reading.devices] == ["0001:00:00.0", "0001:01:00.0", "0002:00:00.0", "0002:01:00.0"]
    assert (port.pci_id, nvme.pci_id, rp1.pci_id) == ("14e4:2712", "144d:a809", "1de4:0001")
    # dtparam=pciex1_gen=3 asked for 8 GT/s, the drive trained at 5: both ends of the link show it.
    assert nvme.link == PcieLink(5.0, 8.0, 1, 1)
    assert port.link == PcieLink(5.0, 8.0, 1, 1)
    assert reading.degraded == ("0001:00:00.0", "0001:01:00.0")
    assert rp1.link == PcieLink(5.0, 5.0, 4, 4)
    # Short (current kernel) names; the root port has seen correctable errors.
    assert port.aer == AerCounts(correctable=7, nonfatal=0, fatal=0)
    assert port.counters["correctable"] == {
        "RxErr": 0,
        "BadTLP": 2,
        "BadDLLP": 1,
        "Rollover": 0,
        "Timeout": 4,
        "NonFatalErr": 0,
        "CorrIntErr": 0,
        "HeaderOF": 0,
        "TOTAL_ERR_COR": 7,
    }
    assert port.counters["fatal"]["CmpltTO"] == 0 and port.counters["fatal"]["TOTAL_ERR_FATAL"] == 0
    assert port.rootport == AerCounts(correctable=9, nonfatal=0, fatal=0)
    assert nvme.aer == AerCounts(correctable=2, nonfatal=0, fatal=0) and nvme.rootport is None
    assert rp1.aer == AerCounts() and rp1.counters == {}  # no AER files on RP1
    # The first reading is the baseline: nothing has risen yet.
    assert reading.rising == () and all(d.increase == AerCounts(0, 0, 0) for d in (port, nvme))


def test_pi5_tree_old_kernel_formats() -> None:
    reading = PcieMonitor(SysfsRoot(DATA / PI5)).read(0.0)
    assert reading.errors == ()
    nvme = reading.devices[1]
    assert nvme.bdf == "0001:01:00.0"
    assert nvme.link == PcieLink(5.0, 5.0, 1, 1)  # "5 GT/s", as 4.19 wrote it
    assert reading.degraded == ()
    assert nvme.counters["correctable"]["Receiver Error"] == 2
    assert nvme.counters["fatal"]["Surprise Down Error"] == 0
    assert nvme.aer == AerCounts(correctable=2, nonfatal=0, fatal=0)
    assert reading.devices[0].rootport == AerCounts(correctable=2, nonfatal=0, fatal=0)


def test_rising_errors(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    monitor = PcieMonitor(SysfsRoot(root))
    monitor.read(0.0)
    _write(root, f"{NVME}/aer_dev_correctable", _correctable(rx_err=5))
    _write(root, f"{PORT}/aer_rootport_total_err_cor", "12\n")
    reading = monitor.read(5.0)
    nvme = reading.devices[1]
    assert nvme.increase == AerCounts(correctable=3, nonfatal=0, fatal=0)
    assert nvme.rising == ("correctable",)
    assert reading.devices[0].rootport_increase == AerCounts(correctable=3, nonfatal=0, fatal=0)
    assert reading.devices[0].rising == ("correctable",)  # seen from the root port too
    assert reading.rising == ("correctable",)
    steady = monitor.read(10.0)
    assert steady.rising == () and steady.devices[1].aer.correctable == 5


def test_fatal_rising_and_counter_reset(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    monitor = PcieMonitor(SysfsRoot(root))
    monitor.read(0.0)
    fatal = (root / NVME / "aer_dev_fatal").read_text().replace("CmpltTO 0", "CmpltTO 1")
    _write(root, f"{NVME}/aer_dev_fatal", fatal.replace("TOTAL_ERR_FATAL 0", "TOTAL_ERR_FATAL 1"))
    assert monitor.read(1.0).rising == ("fatal",)
    # The device was reset and its counters started again at 1: that 1 is new.
    _write(root, f"{NVME}/aer_dev_correctable", _correctable(rx_err=1))
    after_reset = monitor.read(2.0)
    assert after_reset.devices[1].increase == AerCounts(correctable=1, nonfatal=0, fatal=0)


def test_unreadable_file_is_an_error_line_and_the_rest_still_reads(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    monitor = PcieMonitor(SysfsRoot(root))
    monitor.read(0.0)
    _write(root, f"{NVME}/aer_dev_correctable", "RxErr lots\n")
    _write(root, f"{NVME}/current_link_width", "x1\n")
    reading = monitor.read(1.0)
    assert len(reading.errors) == 2
    assert (
        reading.errors[0]
        == f"pcie: 0001:01:00.0: {root}/{NVME_DIR}/current_link_width: expected a link width of 0-32 lanes, got 'x1\\n'"
    )
    aer_file = f"{root}/{NVME_DIR}/aer_dev_correctable"
    assert reading.errors[1] == f"pcie: 0001:01:00.0: {aer_file}: expected '<name> <count>', got 'RxErr lots'"
    nvme = reading.devices[1]
    assert nvme.link is None
    assert nvme.aer == AerCounts(correctable=None, nonfatal=0, fatal=0)
    assert nvme.increase.correctable is None
    # It comes back: growth is measured against the last good reading.
    _write(root, f"{NVME}/aer_dev_correctable", _correctable(rx_err=4))
    assert monitor.read(2.0).devices[1].increase.correctable == 2


def test_link_capability_is_read_until_it_reads_once(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    _write(root, f"{NVME}/max_link_speed", "fast\n")
    monitor = PcieMonitor(SysfsRoot(root))
    first = monitor.read(0.0)
    expected = "expected a link speed such as '5.0 GT/s PCIe', got 'fast\\n'"
    assert first.errors == (f"pcie: 0001:01:00.0: {root}/{NVME_DIR}/max_link_speed: {expected}",)
    assert first.devices[1].link is None
    _write(root, f"{NVME}/max_link_speed", "8.0 GT/s PCIe\n")
    assert monitor.read(1.0).devices[1].link == PcieLink(5.0, 8.0, 1, 1)
    (root / NVME / "max_link_speed").unlink()  # no longer read once known
    assert monitor.read(2.0).errors == ()


def test_removed_device_is_an_event_not_an_error(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    monitor = PcieMonitor(SysfsRoot(root))
    monitor.read(0.0)
    shutil.rmtree(root / NVME_DIR)  # the kernel removes the device and its bus link
    (root / NVME).unlink()
    reading = monitor.read(1.0)
    assert reading.errors == ()
    assert [(e.kind, e.device) for e in reading.events] == [("pcie.lost", "0001:01:00.0")]
    assert "0001:01:00.0" not in [d.bdf for d in reading.devices]
    assert monitor.read(2.0).events == ()


def test_rescan_finds_a_new_device(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    (root / NVME).unlink()  # not there at start-up
    monitor = PcieMonitor(SysfsRoot(root))
    monitor.read(0.0)
    (root / NVME).symlink_to(f"../../../{NVME_DIR.removeprefix('sys/')}")
    monitor.rescan()
    reading = monitor.read(1.0)
    assert [(e.kind, e.device) for e in reading.events] == [("pcie.found", "0001:01:00.0")]
    assert reading.events[0].message == "PCI device 144d:a809 appeared"
    assert len(reading.devices) == 4
    monitor.rescan()
    assert monitor.read(2.0).events == ()


def test_ticks_do_not_glob(monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = PcieMonitor(SysfsRoot(DATA / CM5))

    def no_glob(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tick globbed")

    monkeypatch.setattr(Path, "glob", no_glob)
    monkeypatch.setattr(SysfsRoot, "glob", no_glob)
    for now in range(5):
        assert monitor.read(float(now)).errors == ()


def test_machine_without_pci(tmp_path: Path) -> None:
    reading = PcieMonitor(SysfsRoot(tmp_path)).read(0.0)
    assert (reading.devices, reading.errors, reading.rising, reading.degraded) == ((), (), (), ())


def test_this_machines_sysfs_reads_without_raising() -> None:
    # Whatever this machine is (a PC, a VM, a Pi), its real devices read without an exception.
    if not Path("/sys/bus/pci/devices").is_dir():
        pytest.skip("no /sys/bus/pci on this machine")
    reading = PcieMonitor(SysfsRoot("/")).read(0.0)
    assert all(line.startswith("pcie: ") for line in reading.errors)


# --- per-type counters ------------------------------------------------------------------------------------------------


@given(st.text(max_size=4000))
def test_any_aer_file_parses_bounded_or_is_refused(text: str) -> None:
    try:
        parsed = parse_aer_counters(text)
    except ValueError:
        return
    assert len(parsed) <= MAX_AER_COUNTERS
    assert all(0 < len(k) <= MAX_AER_NAME and k.isprintable() and 0 <= v < 2**64 for k, v in parsed.items())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("".join(f"E{i} 0\n" for i in range(MAX_AER_COUNTERS + 1)), f"more than {MAX_AER_COUNTERS} counters"),
        ("X" * (MAX_AER_NAME + 1) + " 1\n", "printable characters and a 64-bit count"),
        ("Bad\x07TLP 1\n", "printable characters"),
        (f"BadTLP {2**64}\n", "64-bit count"),
    ],
)
def test_aer_files_beyond_the_bounds_are_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_aer_counters(text)


@given(st.dictionaries(_NAME, _COUNT, max_size=25), st.dictionaries(_NAME, _COUNT, max_size=25))
def test_types_are_the_counters_above_zero_and_growth_is_per_type(before: dict[str, int], now: dict[str, int]) -> None:
    types = aer_types({**now, "TOTAL_ERR_COR": 1})
    assert types == {k: v for k, v in now.items() if v > 0}
    grown = type_increase(now, before)
    for name, n in grown.items():
        assert n > 0 and now[name] > 0
        assert n == (now[name] - before.get(name, 0) if now[name] >= before.get(name, 0) else now[name])
    assert set(grown) == {k for k, v in types.items() if v != before.get(k, 0)}
    assert type_increase(now, None) == {}  # first sight: no growth


def test_cm5_tree_with_errors_of_every_severity() -> None:
    reading = PcieMonitor(SysfsRoot(DATA / CM5_AER)).read(0.0)
    assert reading.errors == ()
    port, nvme = reading.devices[:2]
    assert {s: aer_types(c) for s, c in port.counters.items()} == {
        "correctable": {"RxErr": 3, "BadTLP": 41, "BadDLLP": 17, "Rollover": 2, "Timeout": 26},
        "nonfatal": {"CmpltTO": 3},
        "fatal": {"SDES": 1},
    }
    assert port.aer == AerCounts(correctable=89, nonfatal=3, fatal=1)
    assert port.rootport == AerCounts(correctable=101, nonfatal=5, fatal=1)  # its own and the drive's
    assert {s: aer_types(c) for s, c in nvme.counters.items()} == {
        "correctable": {"RxErr": 7, "BadTLP": 5},
        "nonfatal": {"UnsupReq": 2},
        "fatal": {},
    }
    assert nvme.aer == AerCounts(correctable=12, nonfatal=2, fatal=0)


def test_a_rise_is_named_by_type(tree_copy: TreeCopy) -> None:
    root = tree_copy(CM5)
    monitor = PcieMonitor(SysfsRoot(root))
    assert all(d.types_increase == {} for d in monitor.read(0.0).devices)
    _write(root, f"{NVME}/aer_dev_correctable", _correctable(rx_err=2, bad_tlp=3, timeout=1))
    nvme = monitor.read(1.0).devices[1]
    assert nvme.types_increase == {"correctable": {"BadTLP": 3, "Timeout": 1}}
    assert monitor.read(2.0).devices[1].types_increase == {}
    _write(root, f"{NVME}/aer_dev_correctable", _correctable(rx_err=1))  # reset: what it shows is new
    assert monitor.read(3.0).devices[1].types_increase == {"correctable": {"RxErr": 1}}


def test_check_tells_link_errors_from_device_errors() -> None:
    port = PcieMonitor(SysfsRoot(DATA / CM5_AER)).read(0.0).devices[0]
    problems = aer_problems(port.bdf, port.pci_id, port.counters)
    assert problems[0].startswith(
        "pcie: 0001:00:00.0 (14e4:2712) correctable link errors since boot: BadTLP 41, Timeout 26, BadDLLP 17, "
        "RxErr 3, Rollover 2; if they keep rising, the link is flaky: reseat or replace the cable or adapter"
    )
    assert problems[1].startswith("pcie: 0001:00:00.0 (14e4:2712) nonfatal device errors since boot: CmpltTO 3;")
    assert "fatal link errors since boot: SDES 1" in problems[2] and len(problems) == 3
    assert aer_problems("x", "y", {"correctable": {"RxErr": 0, "TOTAL_ERR_COR": 0}}) == []


def test_the_link_types_cover_both_kernel_spellings() -> None:
    for short, long in zip(KERNEL_NAMES["short"][:5], KERNEL_NAMES["long"][:5], strict=True):
        assert short in LINK_TYPES and long in LINK_TYPES
    assert not {"CmpltTO", "UnsupReq", "CmpltAbrt", "MalfTLP", "NonFatalErr", "HeaderOF"} & LINK_TYPES
