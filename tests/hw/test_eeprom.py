"""Reading the bootloader's EEPROM configuration: the parser on recorded outputs and on anything at all, and
``rpi-eeprom-config`` run as a real process (present, missing, failing, hanging)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nodeagent.hw.eeprom import MODEL_FILTERS, Setting, parse_boot_config, read_boot_config

EEPROM = Path(__file__).resolve().parents[1] / "data" / "eeprom"


def fake_binary(tmp_path: Path, body: str, name: str = "rpi-eeprom-config") -> Path:
    """An executable shell script named like the real tool, in its own directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def values(text: str, family: str) -> dict[str, str]:
    return {k: s.value for k, s in parse_boot_config(text).effective(family).items()}


def test_recorded_pi4_outputs() -> None:
    cfg = parse_boot_config((EEPROM / "pi4-rpi-eeprom-163.txt").read_text())
    got = values((EEPROM / "pi4-rpi-eeprom-163.txt").read_text(), "pi4")
    assert got["TFTP_IP"] == "" and got["BOOT_ORDER"] == "0x21" and got["POWER_OFF_ON_HALT"] == "0"
    assert "FREEZE_VERSION" not in got  # under [none]
    assert cfg.settings[-1] == Setting("FREEZE_VERSION", "0", 13, None, (), True) and cfg.unparsed == ()
    cfg = parse_boot_config((EEPROM / "pi4-rpi-eeprom-493.txt").read_text())
    assert "BOOT_ORDER" not in cfg.effective("pi4")  # only when GPIO3 is high at boot: not judged here
    (order,) = cfg.undetermined("pi4", "BOOT_ORDER")
    assert order.value == "0xf14" and order.section == "[gpio3=1]" and order.line == 6


def test_recorded_cm5_outputs() -> None:
    assert "POWER_OFF_ON_HALT" not in values((EEPROM / "cm5-factory.txt").read_text(), "cm5")
    assert values((EEPROM / "cm5-nanocluster-14.txt").read_text(), "cm5")["POWER_OFF_ON_HALT"] == "0"
    cfg = parse_boot_config((EEPROM / "cm5-cluster.txt").read_text())
    got = {k: s.value for k, s in cfg.effective("cm5").items()}
    assert got["PSU_MAX_CURRENT"] == "5000" and got["BOOT_WATCHDOG_TIMEOUT"] == "60"
    assert "PSU_MAX_CURRENT" not in cfg.effective("pi4")  # [cm5] is not a Pi 4's
    assert "PSU_MAX_CURRENT" in cfg.effective("cm5") and "PSU_MAX_CURRENT" not in cfg.effective("pi5")
    # [gpio7=0] adds to the [cm5] above it (filters of different kinds combine until [all])
    assert [s.section for s in cfg.undetermined("cm5", "BOOT_WATCHDOG_TIMEOUT")] == ["[cm5][gpio7=0]"]
    assert cfg.config_txt_lines == 1 and "dtparam" not in str(cfg.settings)  # config.txt text is not ours
    damaged = parse_boot_config((EEPROM / "cm5-damaged.txt").read_text())
    assert damaged.unparsed == ((5, "this line is not a setting"),)
    assert values((EEPROM / "cm5-damaged.txt").read_text(), "cm5")["POWER_OFF_ON_HALT"] == "yes"


def test_filters_combine_and_reset() -> None:
    text = "[cm5]\nA=1\n[gpio4=1]\nB=1\n[pi4]\nC=1\n[all]\nD=1\n[none]\nE=1\n[cm5]\nF=1\n[ALL]\n G = 2 \n"
    cfg = parse_boot_config(text)
    assert {k: s.applies("cm5") for k, s in ((s.key, s) for s in cfg.settings)} == {
        "A": True,
        "B": None,  # [cm5] and a gpio condition: depends on the boot
        "C": False,  # [pi4] replaced [cm5]
        "D": True,
        "E": False,
        "F": False,  # [none] holds until [all]
        "G": True,
    }
    assert cfg.settings[-1].value == "2" and cfg.settings[1].section == "[cm5][gpio4=1]"


# A configuration as a list of (filter or None, key, value) lines, rendered and parsed back.
keys = st.sampled_from(["POWER_OFF_ON_HALT", "BOOT_WATCHDOG_TIMEOUT", "PSU_MAX_CURRENT", "BOOT_UART"])
words = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="[]#="), max_size=8)
filters = st.sampled_from(["all", "none", "cm5", "pi5", "pi4", "cm4", "gpio7=0", "partition=62"])
lines = st.lists(st.one_of(filters.map(lambda f: (f, None, None)), st.tuples(st.none(), keys, words)), max_size=30)


def expected(config: list, family: str) -> dict[str, str]:
    """The effective settings, worked out independently: model filters replace, others add, [all] resets."""
    model, cond, off, out = None, False, False, {}
    for f, key, value in config:
        if f == "all":
            model, cond, off = None, False, False
        elif f == "none":
            off = True
        elif f in ("cm5", "pi5", "pi4", "cm4"):
            model = f
        elif f is not None:
            cond = True
        elif not off and not cond and (model is None or model in MODEL_FILTERS[family]):
            out[key] = value
    return out


@given(lines, st.sampled_from(sorted(MODEL_FILTERS)))
def test_effective_settings_match_the_filter_rules(config: list, family: str) -> None:
    text = "\n".join(f"[{f}]" if f else f"{k}={v}" for f, k, v in config)
    assert values(text, family) == expected(config, family)


@given(st.text(max_size=3000))
def test_any_text_parses_without_raising(text: str) -> None:
    cfg = parse_boot_config(text)
    for s in cfg.settings:
        assert s.key and "=" not in s.key and s.line >= 1
    assert all(len(line) <= 120 for _, line in cfg.unparsed)


def test_huge_output_is_bounded() -> None:
    cfg = parse_boot_config("A=1\n" * 5000)
    assert len(cfg.settings) == 2000 and cfg.unparsed[-1][1] == "… 3000 more lines not read"


def test_reading_the_real_process(tmp_path: Path) -> None:
    script = fake_binary(tmp_path, f'exec cat "{EEPROM / "cm5-factory.txt"}"')
    got = read_boot_config(str(script))
    assert got.error is None and got.binary == str(script)
    assert got.text == (EEPROM / "cm5-factory.txt").read_text()


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    got = read_boot_config(str(tmp_path / "rpi-eeprom-config"))
    assert got.text is None
    assert got.error == (
        f"{tmp_path / 'rpi-eeprom-config'} not found on PATH, so the bootloader settings were not read: "
        "apt install rpi-eeprom"
    )


def test_a_failing_or_hanging_binary(tmp_path: Path) -> None:
    failing = fake_binary(tmp_path, 'echo "vcgencmd: Can\'t open device file: /dev/vcio" >&2; exit 1', "failing")
    got = read_boot_config(str(failing))
    assert got.text is None and got.error is not None
    assert "failed (exit 1: vcgencmd: Can't open device file: /dev/vcio)" in got.error and "as root" in got.error
    hanging = fake_binary(tmp_path, "exec sleep 30", "hanging")
    got = read_boot_config(str(hanging), timeout_s=0.3)
    assert got.error == f"{hanging} gave no answer within 0.3 s"
