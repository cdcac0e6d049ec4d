"""Samples become telemetry that the wire can carry: recorded nodes, simulated faults, counters past 2^64."""

from __future__ import annotations

from pathlib import Path

from nodeagent.hw import SimBackend, SimConfig
from nodeagent.hw.events import HwEvent
from nodeagent.hw.nvme import NvmeSample, parse_smart_log
from nodeagent.node.telemetry import U64_MAX, alert_fields, nvme_status, pcie_alerts, telemetry_from
from nodeagent.protocol import Telemetry, decode, encode
from tests.hw.trees import recorded_backend

PAGES = Path(__file__).resolve().parents[1] / "data" / "nvme"


def test_a_recorded_cm5_tick_travels_whole() -> None:
    backend = recorded_backend("cm5-nanocluster")
    telemetry = telemetry_from("n1", 1, backend.read(1000.0), None)
    back = decode(encode(telemetry), Telemetry)
    assert back == telemetry
    assert back.temp_c == 52.35 and back.errors == ()
    (drive,) = back.nvme
    assert drive.device == "nvme0" and drive.temp_c == 41.85 and drive.available_spare_pct == 100
    port = next(p for p in back.pcie if p.device == "0001:00:00.0")
    assert port.degraded and port.speed_gts == 5.0 and port.max_speed_gts == 8.0
    assert port.aer_correctable == 9  # the root port's total of errors received from below
    assert back.power_w is not None and 3.0 < back.power_w < 6.0 and back.ext5v_v == 4.87894


def test_counters_past_2_64_are_clamped_not_fatal() -> None:
    smart = parse_smart_log((PAGES / "counters-over-2e64.bin").read_bytes())
    status = nvme_status(NvmeSample("nvme0", temp_c=40.0, smart=smart, smart_t=1.0))
    assert status.data_read_bytes == U64_MAX
    assert decode(encode(Telemetry(node="n", seq=1, t=0.0, nvme=(status,))), Telemetry).nvme == (status,)
    assert "reliability_degraded" in status.warnings


def test_simulated_faults_show_in_telemetry() -> None:
    backend = SimBackend("n1", SimConfig(faults=("aer_climb", "nvme_vanish")), lambda: 0.0)
    backend.read(0.0)
    telemetry = telemetry_from("n1", 2, backend.read(1.0), "job-1")
    assert telemetry.nvme[0].present is False and telemetry.job == "job-1"
    assert telemetry.pcie[0].aer_rising == ("correctable",) and telemetry.pcie[0].aer_correctable == 6


def test_alert_fields_name_the_event_and_device() -> None:
    fields = alert_fields(HwEvent("nvme.lost", "nvme0", "nvme0 is gone"))
    assert fields == {"message": "nvme0 is gone", "data": {"hw_event": "nvme.lost", "device": "nvme0"}}


def test_pcie_alerts_fire_on_change_not_every_tick() -> None:
    backend = recorded_backend("cm5-nanocluster")
    devices = backend.read(0.0).pcie
    events, degraded = pcie_alerts(devices, frozenset())
    assert sorted(e.device for e in events if e.kind == "pcie.degraded") == ["0001:00:00.0", "0001:01:00.0"]
    again, _ = pcie_alerts(backend.read(1.0).pcie, degraded)
    assert again == []  # still degraded, nothing new; the cached tick repeats no AER increase
    healed, none = pcie_alerts((), degraded)
    assert [e.kind for e in healed] == ["pcie.recovered", "pcie.recovered"] and none == frozenset()


def test_rising_aer_is_one_alert_per_reading() -> None:
    backend = SimBackend("n1", SimConfig(faults=("aer_climb",)), lambda: 0.0)
    events, _ = pcie_alerts(backend.read(0.0).pcie, frozenset())
    rising = [e for e in events if e.kind == "pcie.aer_rising"]
    assert {e.device for e in rising} == {"0001:00:00.0", "0001:01:00.0"}
    assert "+3 correctable" in rising[0].message


def test_per_type_aer_counts_travel_above_zero_only() -> None:
    telemetry = telemetry_from("n1", 1, recorded_backend("cm5-aer").read(0.0), None)
    back = decode(encode(telemetry), Telemetry)
    port, nvme = back.pcie[:2]
    assert port.aer_types == {
        "correctable": {"RxErr": 3, "BadTLP": 41, "BadDLLP": 17, "Rollover": 2, "Timeout": 26},
        "nonfatal": {"CmpltTO": 3},
        "fatal": {"SDES": 1},
    }
    assert nvme.aer_types == {"correctable": {"RxErr": 7, "BadTLP": 5}, "nonfatal": {"UnsupReq": 2}}
    assert back.pcie[2].aer_types == {}  # RP1's bridge: no error
    old = telemetry_from("n1", 1, recorded_backend("pi5-hwmon-only").read(0.0), None).pcie[1]
    assert old.aer_types == {"correctable": {"Receiver Error": 2}}  # a 4.19 kernel's name, as it wrote it


def test_a_rising_alert_names_the_types_that_rose() -> None:
    backend = SimBackend("n1", SimConfig(faults=("aer_climb",)), lambda: 0.0)
    events, _ = pcie_alerts(backend.read(0.0).pcie, frozenset())
    drive = next(e for e in events if e.kind == "pcie.aer_rising" and e.device == "0001:01:00.0")
    assert drive.message == "PCIe 0001:01:00.0 AER errors rising: +3 correctable (BadTLP +2, RxErr +1)"
    telemetry = telemetry_from("n1", 1, backend.read(1.0), None)
    assert telemetry.pcie[1].aer_types == {"correctable": {"RxErr": 2, "BadTLP": 4}}
