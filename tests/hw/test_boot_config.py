"""Judging the bootloader settings for a cluster, and the check through the real CLI: a recorded CM5 tree and a
stand-in ``rpi-eeprom-config`` on PATH that prints a recorded output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nodeagent.hw.boot_config import FIX, Finding, check_boot_config, family_of, judge
from tests.hw.test_eeprom import EEPROM, fake_binary
from tests.hw.trees import DATA

REPO = Path(__file__).resolve().parents[2]
CM5 = "Raspberry Pi Compute Module 5 Rev 1.0"


def by_key(findings: tuple[Finding, ...]) -> dict[str, Finding]:
    return {f.key: f for f in findings}


def test_power_off_on_halt_on_a_slot_powered_cm5_is_a_problem_with_the_fix() -> None:
    f = by_key(judge({"POWER_OFF_ON_HALT": "1"}, "cm5", "nanocluster"))["POWER_OFF_ON_HALT"]
    assert (f.level, f.value, f.source) == ("problem", "1", "eeprom")
    assert "slot power pulse will not boot this node" in f.text
    assert f"run `{FIX}`, set POWER_OFF_ON_HALT=0, and reboot" in f.text and FIX == "sudo rpi-eeprom-config --edit"


def test_missing_keys_take_the_cm5_defaults() -> None:
    found = by_key(judge({}, "cm5", "nanocluster"))
    halt = found["POWER_OFF_ON_HALT"]
    assert (halt.value, halt.source, halt.level) == ("1", "default", "problem")
    assert "(the default on this model)" in halt.text
    wd = found["BOOT_WATCHDOG_TIMEOUT"]
    assert (wd.value, wd.source, wd.level) == ("0", "default", "note") and "BOOT_WATCHDOG_TIMEOUT=60" in wd.text
    psu = found["PSU_MAX_CURRENT"]
    assert (psu.value, psu.level) == ("unset", "note") and "PSU_MAX_CURRENT=5000" in psu.text


def test_verdicts_by_board_and_family() -> None:
    blade = by_key(judge({}, "cm5", "compute-blade"))["POWER_OFF_ON_HALT"]
    assert blade.level == "note" and "PoE port" in blade.text  # halted blades wait for a power cycle: worth knowing
    assert by_key(judge({}, "pi5", "nanocluster"))["POWER_OFF_ON_HALT"].level == "ok"  # a Pi 5 defaults to 0
    assert by_key(judge({}, "pi5", "pi5"))["PSU_MAX_CURRENT"].level == "ok"  # USB-PD asks the supply
    # A CM4 only powers off at halt with WAKE_ON_GPIO=0 as well.
    assert by_key(judge({"POWER_OFF_ON_HALT": "1"}, "cm4", "nanocluster"))["POWER_OFF_ON_HALT"].level == "ok"
    cm4 = judge({"POWER_OFF_ON_HALT": "1", "WAKE_ON_GPIO": "0"}, "cm4", "nanocluster")
    assert by_key(cm4)["POWER_OFF_ON_HALT"].level == "problem" and "PSU_MAX_CURRENT" not in by_key(cm4)
    tuned = by_key(
        judge(
            {"POWER_OFF_ON_HALT": "0", "BOOT_WATCHDOG_TIMEOUT": "60", "PSU_MAX_CURRENT": "5000"}, "cm5", "nanocluster"
        )
    )
    assert {k: f.level for k, f in tuned.items()} == dict.fromkeys(tuned, "ok")
    assert "in 60 s" in tuned["BOOT_WATCHDOG_TIMEOUT"].text
    assert by_key(judge({"PSU_MAX_CURRENT": "3000"}, "cm5", "generic"))["PSU_MAX_CURRENT"].level == "note"


def test_values_of_the_wrong_kind_are_problems() -> None:
    found = by_key(
        judge({"POWER_OFF_ON_HALT": "yes", "BOOT_WATCHDOG_TIMEOUT": "-5", "PSU_MAX_CURRENT": "lots"}, "cm5", "generic")
    )
    assert [f.level for f in found.values()] == ["problem"] * 3
    assert found["POWER_OFF_ON_HALT"].text == f"expected 0 or 1: fix it with `{FIX}`"
    assert by_key(judge({"BOOT_WATCHDOG_TIMEOUT": "0x3c"}, "cm5", "generic"))["BOOT_WATCHDOG_TIMEOUT"].level == "ok"


def test_families() -> None:
    assert family_of(CM5) == "cm5" and family_of("Raspberry Pi 5 Model B Rev 1.0") == "pi5"
    assert family_of("Raspberry Pi Compute Module 4 Rev 1.1") == "cm4"
    assert family_of("Raspberry Pi Compute Module 4S Rev 1.0") is None
    assert family_of("Raspberry Pi 3 Model B Plus Rev 1.3") is None and family_of("") is None


settings = st.dictionaries(
    st.sampled_from(["POWER_OFF_ON_HALT", "BOOT_WATCHDOG_TIMEOUT", "PSU_MAX_CURRENT", "WAKE_ON_GPIO", "BOOT_UART"]),
    st.one_of(st.sampled_from(["0", "1", "2", "60", "5000", "0x10", "", "-1"]), st.text(max_size=6)),
)


@given(
    settings,
    st.sampled_from(["cm5", "pi5", "pi500", "cm4", "pi4", "pi400"]),
    st.sampled_from(["nanocluster", "compute-blade", "generic", "pi5"]),
)
def test_judging_never_raises_and_a_slot_powered_halt_off_is_always_a_problem(
    values: dict[str, str], family: str, board: str
) -> None:
    found = by_key(judge(values, family, board))
    assert {"POWER_OFF_ON_HALT", "BOOT_WATCHDOG_TIMEOUT"} <= set(found)
    assert all(f.level in ("ok", "note", "problem") and f.text for f in found.values())
    halt = values.get("POWER_OFF_ON_HALT", "1" if family in ("cm5", "pi500", "pi400") else "0")
    wake = values.get("WAKE_ON_GPIO", "1")
    powers_off = halt.strip() == "1" and (family not in ("cm4", "pi4", "pi400") or wake.strip() == "0")
    if board == "nanocluster" and powers_off:
        assert found["POWER_OFF_ON_HALT"].level == "problem"
    if found["POWER_OFF_ON_HALT"].level == "ok":
        assert not powers_off


# --- through the real CLI --------------------------------------------------------------------------------------


def run_check(
    tmp_path: Path, recorded: str | None, *args: str, board: str = "nanocluster"
) -> subprocess.CompletedProcess[str]:
    """``picluster-agent check`` on the recorded CM5 tree, with a stand-in rpi-eeprom-config printing ``recorded``
    (None: no rpi-eeprom-config on PATH at all)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if recorded is not None:
        fake_binary(tmp_path, f'exec cat "{EEPROM / recorded}"')
    config = tmp_path / "agent.toml"
    config.write_text(f'[hardware]\nboard = "{board}"\nslot = 2\n')
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}/usr/bin:/bin"}
    argv = [sys.executable, "-m", "nodeagent", "check", "--node-id", "n1", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def test_check_flags_the_cm5_default_on_a_nanocluster(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "cm5-factory.txt", "--root", str(DATA / "cm5-nanocluster"))
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "boot config (EEPROM): read from the EEPROM" in out
    assert "  POWER_OFF_ON_HALT      1 (default)  problem: is 1 (the default on this model)" in out
    assert "  BOOT_WATCHDOG_TIMEOUT  0 (default)  note: off:" in out
    assert (
        "  - boot: POWER_OFF_ON_HALT=1: is 1 (the default on this model): after a shutdown the PMIC is off and a slot "
        "power pulse will not boot this node; run `sudo rpi-eeprom-config --edit`, set POWER_OFF_ON_HALT=0, and reboot"
    ) in out


def test_check_json_with_the_cluster_settings(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "cm5-cluster.txt", "--root", str(DATA / "cm5-nanocluster"), "--json")
    data = json.loads(proc.stdout)
    boot = data["boot_config"]
    assert boot["status"] == "read from the EEPROM"
    assert {f["key"]: (f["value"], f["level"]) for f in boot["findings"]} == {
        "POWER_OFF_ON_HALT": ("0", "ok"),
        "BOOT_WATCHDOG_TIMEOUT": ("60", "ok"),
        "PSU_MAX_CURRENT": ("5000", "ok"),
    }
    assert boot["notes"] == ["BOOT_WATCHDOG_TIMEOUT=0 also set under [cm5][gpio7=0] (line 13): depends on the boot"]
    assert not [p for p in data["problems"] if p.startswith("boot:")]


def test_check_names_damaged_values_and_lines(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "cm5-damaged.txt", "--root", str(DATA / "cm5-nanocluster"), "--json")
    data = json.loads(proc.stdout)
    boot_problems = [p for p in data["problems"] if p.startswith("boot:")]
    assert boot_problems == [
        "boot: POWER_OFF_ON_HALT=yes: expected 0 or 1: fix it with `sudo rpi-eeprom-config --edit`",
        "boot: BOOT_WATCHDOG_TIMEOUT=-5: expected whole seconds (0 = off): fix it with `sudo rpi-eeprom-config --edit`",
        "boot: PSU_MAX_CURRENT=lots: expected milliamps (3000 or 5000): fix it with `sudo rpi-eeprom-config --edit`",
    ]
    assert data["boot_config"]["notes"] == ["line 5 not understood: 'this line is not a setting'"]


def test_check_without_rpi_eeprom_config_says_how_to_install_it(tmp_path: Path) -> None:
    proc = run_check(tmp_path, None, "--root", str(DATA / "cm5-nanocluster"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = "rpi-eeprom-config not found on PATH, so the bootloader settings were not read: apt install rpi-eeprom"
    assert f"boot config (EEPROM): not read: {line}" in proc.stdout
    assert f"  - boot: {line}" in proc.stdout


def test_check_skips_the_simulator(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "cm5-factory.txt", "--sim", "--json", board="generic")
    assert json.loads(proc.stdout)["boot_config"] == {
        "status": "not checked: simulated node",
        "findings": [],
        "notes": [],
    }


def test_boards_without_an_eeprom_are_not_checked() -> None:
    assert check_boot_config("Raspberry Pi 3 Model B Rev 1.2", "generic").status == (
        "not checked: Raspberry Pi 3 Model B Rev 1.2 has no EEPROM bootloader"
    )
    assert check_boot_config("", "generic").status == "not checked: the device-tree model is unknown"
