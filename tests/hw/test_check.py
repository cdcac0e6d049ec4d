"""`picluster-agent check` as an operator runs it: a real process reading a recorded tree or the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.hw.trees import DATA, VCGENCMD
from tests.signing import make_operator_key

REPO = Path(__file__).resolve().parents[2]


def check(tmp_path: Path, *args: str, config: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "nodeagent", "check", "--node-id", "n1", *args]
    if config:
        path = tmp_path / "agent.toml"
        path.write_text(config)
        argv += ["--config", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)


def test_recorded_cm5_reports_sources_sample_and_problems(tmp_path: Path) -> None:
    proc = check(
        tmp_path,
        "--root",
        str(DATA / "cm5-nanocluster"),
        "--json",
        config=f'[hardware]\nvcgencmd = "{VCGENCMD}"\nboard = "nanocluster"\nslot = 1\n',
    )
    assert proc.returncode == 1, proc.stderr  # the recorded node has problems worth fixing
    data = json.loads(proc.stdout)
    assert data["facts"]["board"] == "nanocluster" and data["facts"]["model"].startswith("Raspberry Pi Compute")
    assert "cpu-thermal" in data["sources"]["temperature"] and "Samsung" in data["sources"]["nvme"]
    assert data["fans"]["from"] == "board profile 'nanocluster', slot 1"
    assert data["fans"]["fans"][0]["backend"] == "gpio"
    sample = data["sample"]
    assert sample["temp_c"] == 52.35 and sample["nvme"][0]["temp_c"] == 41.85
    assert 3.0 < sample["power_w"] < 6.0  # from the recorded vcgencmd, through a real process
    problems = "\n".join(data["problems"])
    assert "pcie: 0001:01:00.0 (144d:a809) trained at 5 GT/s x1 (max 8 GT/s x1)" in problems
    assert "/dev/gpiochip0 does not exist" in problems  # a recorded tree has no device nodes
    # Slot 1 of a NanoCluster drives the chassis and switches the slots; the recorded tree has no expander yet.
    assert data["chassis"] == {
        "freq_cap": "1000-2400 MHz, 15 steps",
        "chassis_fan_and_budget": True,
        "slot_power": "expander not found",
    }
    assert "expected one I2C GPIO expander under /sys/bus/gpio/devices, found none; set slot_power.chip" in problems


def test_text_report_and_the_slots_without_a_fan(tmp_path: Path) -> None:
    proc = check(tmp_path, "--root", str(DATA / "pi5-hwmon-only"), config=f'[hardware]\nvcgencmd = "{VCGENCMD}"\n')
    out = proc.stdout
    assert out.startswith("node n1: Raspberry Pi 5 Model B Rev 1.0 (board pi5")
    for heading in ("sensors:", "fans (from board profile 'pi5'):", "chassis:", "one sample:", "problems:"):
        assert heading in out
    assert "under_voltage" in out  # the Pi 5 tree is on a weak supply
    proc = check(
        tmp_path, "--root", str(DATA / "cm5-nanocluster"), config='[hardware]\nboard = "nanocluster"\nslot = 3\n'
    )
    assert "this node drives no fan" in proc.stdout


def test_a_healthy_simulated_node_has_no_problems(tmp_path: Path) -> None:
    proc = check(tmp_path, "--sim", "--json")
    data = json.loads(proc.stdout)
    assert data["backend"] == "sim" and data["sample"]["nvme"][0]["present"]
    sim_problems = [p for p in data["problems"] if not p.startswith("jobs:")]  # hpcc may be absent here
    assert sim_problems == [] and proc.returncode in (0, 1)


def test_whose_commands_the_node_obeys_and_a_node_that_would_obey_none(tmp_path: Path) -> None:
    keys = make_operator_key(tmp_path / "op", "alice")
    signed = f'[security]\nrequire_signed = true\noperator_keys_dir = "{keys.keys_dir}"\n'
    data = json.loads(check(tmp_path, "--sim", "--json", config=signed).stdout)
    assert data["security"]["require_signed"] is True and data["security"]["operator_keys"].startswith("alice (")
    assert not [p for p in data["problems"] if p.startswith("security:")]
    none = signed.replace(str(keys.keys_dir), str(tmp_path / "absent"))
    data = json.loads(check(tmp_path, "--sim", "--json", config=none).stdout)
    (problem,) = [p for p in data["problems"] if p.startswith("security:")]
    assert "refuses every one" in problem and "piclusterctl keygen" in problem
    assert not json.loads(check(tmp_path, "--sim", "--json").stdout)["security"]["require_signed"]  # --sim default


def test_a_bad_config_is_exit_2(tmp_path: Path) -> None:
    proc = check(tmp_path, config="[hardware]\nslot = -1\n")
    assert proc.returncode == 2 and "hardware.slot: expected a slot number" in proc.stderr


def test_per_type_aer_counts_and_what_they_point_at(tmp_path: Path) -> None:
    config = f'[hardware]\nvcgencmd = "{VCGENCMD}"\n'
    data = json.loads(check(tmp_path, "--root", str(DATA / "cm5-aer"), "--json", config=config).stdout)
    port = data["sample"]["pcie"][0]
    assert port["aer_types"]["correctable"]["BadTLP"] == 41 and port["aer_types"]["nonfatal"] == {"CmpltTO": 3}
    problems = "\n".join(data["problems"])
    assert "0001:00:00.0 (14e4:2712) correctable link errors since boot: BadTLP 41, Timeout 26" in problems
    assert "0001:01:00.0 (144d:a809) nonfatal device errors since boot: UnsupReq 2; the device" in problems
    text = check(tmp_path, "--root", str(DATA / "cm5-aer"), config=config).stdout
    assert (
        "aer cor=101 (BadTLP 41, Timeout 26, BadDLLP 17, RxErr 3, Rollover 2) nonfatal=5 (CmpltTO 3) fatal=1 (SDES 1)"
        in text
    )
    assert "None" not in text
