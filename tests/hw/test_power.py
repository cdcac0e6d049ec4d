"""Board power: the vcgencmd pmic_read_adc parser and reader, and the INA219/INA226 register arithmetic."""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.errors import HardwareError
from nodeagent.hw.power import Ina2xx, PmicPower, parse_pmic_adc, run_command

# Verbatim `vcgencmd pmic_read_adc` on a Pi 5 (reference/hardware.md §3.4, from leukipp/touchkio #35).
PI5_PMIC_ADC = """\
 3V7_WL_SW_A current(0)=0.12199130A
   3V3_SYS_A current(1)=0.15224510A
   1V8_SYS_A current(2)=0.17273960A
  DDR_VDD2_A current(3)=0.11613570A
  DDR_VDDQ_A current(4)=0.02941200A
   1V1_SYS_A current(5)=0.21763240A
    0V8_SW_A current(6)=0.50748360A
  VDD_CORE_A current(7)=1.54489000A
   3V3_DAC_A current(17)=0.00000000A
   3V3_ADC_A current(18)=0.00018315A
   0V8_AON_A current(16)=0.00390720A
      HDMI_A current(22)=0.01709400A
 3V7_WL_SW_V volt(8)=3.60605200V
   3V3_SYS_V volt(9)=3.31931300V
   1V8_SYS_V volt(10)=1.79682400V
  DDR_VDD2_V volt(11)=1.10842400V
  DDR_VDDQ_V volt(12)=0.60549390V
   1V1_SYS_V volt(13)=1.10219700V
    0V8_SW_V volt(14)=0.80146440V
  VDD_CORE_V volt(15)=0.88725180V
   3V3_DAC_V volt(20)=3.31501500V
   3V3_ADC_V volt(21)=3.31684600V
   0V8_AON_V volt(19)=0.79882700V
      HDMI_V volt(23)=4.90440000V
     EXT5V_V volt(24)=4.87894000V
      BATT_V volt(25)=2.50512600V
"""


# --- the parser -----------------------------------------------------------------------------------------------------


def test_pi5_sample() -> None:
    reading = parse_pmic_adc(PI5_PMIC_ADC)
    assert len(reading.raw) == 26
    assert reading.raw[0] == ("3V7_WL_SW_A", 0, 0.1219913)
    assert reading.raw[-1] == ("BATT_V", 25, 2.505126)
    assert len(reading.rails) == 14
    assert reading.power_w == pytest.approx(3.50705, abs=1e-5)  # Σ V·I over the 12 paired rails, by hand
    assert reading.ext5v_v == pytest.approx(4.87894)
    core = reading.rail("VDD_CORE")
    assert core is not None and core.power_w == pytest.approx(1.54489 * 0.8872518)
    batt = reading.rail("BATT")
    assert batt is not None and (batt.volts, batt.current_a, batt.power_w) == (2.505126, None, None)
    assert reading.rail("NOPE") is None


_RAIL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=11)
_VALUE = st.floats(min_value=0, max_value=20, allow_nan=False)


@given(st.dictionaries(_RAIL, st.tuples(st.none() | _VALUE, st.none() | _VALUE), min_size=1, max_size=20))
def test_round_trip_and_power_sum(rails: dict[str, tuple[float | None, float | None]]) -> None:
    rails = {name: va for name, va in rails.items() if va != (None, None)}
    if not rails:
        return
    # The firmware's layout: labels right-aligned in 12 columns, currents first, then voltages, 8 decimals.
    lines, expected_w, channel = [], 0.0, 0
    for name, (_, amps) in rails.items():
        if amps is not None:
            lines.append(f"{name + '_A':>12} current({channel})={amps:.8f}A")
            channel += 1
    for name, (volts, _) in rails.items():
        if volts is not None:
            lines.append(f"{name + '_V':>12} volt({channel})={volts:.8f}V")
            channel += 1
    for volts, amps in rails.values():
        if volts is not None and amps is not None:
            expected_w += float(f"{volts:.8f}") * float(f"{amps:.8f}")
    reading = parse_pmic_adc("\n".join(lines) + "\n")
    assert reading.power_w == pytest.approx(expected_w)
    assert {r.name for r in reading.rails} == set(rails)
    assert len(reading.raw) == len(lines)
    for rail in reading.rails:
        volts, amps = rails[rail.name]
        assert rail.volts == (None if volts is None else pytest.approx(volts, abs=1e-8))
        assert rail.current_a == (None if amps is None else pytest.approx(amps, abs=1e-8))


@given(st.text(max_size=200))
def test_garbage_is_a_value_error(text: str) -> None:
    try:
        reading = parse_pmic_adc(text)
    except ValueError:
        return
    assert reading.raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no rail readings"),
        ("\n\n", "no rail readings"),
        ('error=2 error_msg="Command not registered"\n', "expected '<RAIL>_A current"),
        ("VDD_CORE_A volt(7)=1.0V\n", "expected '<RAIL>_A current"),  # a current label with a voltage
        ("VDD_CORE_A current(7)=1.0V\n", "expected '<RAIL>_A current"),  # a current in volts
        ("VDD_CORE_A current(7)=1.0.1A\n", "expected '<RAIL>_A current"),
        ("VDD_CORE_A current(x)=1.0A\n", "expected '<RAIL>_A current"),
        ("VDD_CORE_A current(7)=1A\nVDD_CORE_A current(8)=2A\n", "rail VDD_CORE_A appears twice"),
    ],
)
def test_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_pmic_adc(text)


# --- PmicPower ------------------------------------------------------------------------------------------------------


class Replay:
    """Replays recorded vcgencmd output and counts the runs (the one part of vcgencmd a test can have)."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.runs: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> str:
        self.runs.append(tuple(argv))
        return self.output


def test_runs_at_most_every_interval() -> None:
    replay = Replay(PI5_PMIC_ADC)
    pmic = PmicPower(interval_s=10.0, run=replay)
    first = pmic.read(100.0)
    assert first.power_w == pytest.approx(3.50705, abs=1e-5)
    assert (first.measured_t, first.errors) == (100.0, ())
    for now in (101.0, 105.0, 109.99):
        sample = pmic.read(now)
        assert (sample.t, sample.measured_t, sample.ext5v_v) == (now, 100.0, pytest.approx(4.87894))
    assert replay.runs == [("vcgencmd", "pmic_read_adc")]
    assert pmic.read(110.0).measured_t == 110.0
    assert pmic.read(50.0).measured_t == 50.0  # a clock stepped back runs it rather than wait
    assert len(replay.runs) == 3


def test_missing_vcgencmd_warns_once_and_is_absent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pmic = PmicPower(str(tmp_path / "vcgencmd"), interval_s=10.0)  # the real run_command: a real exec that fails
    with caplog.at_level(logging.WARNING, logger="nodeagent.hw.power"):
        first = pmic.read(0.0)
        later = [pmic.read(t) for t in (10.0, 20.0, 1000.0)]
    (line,) = first.errors
    assert line.startswith(f"power: absent ({tmp_path}/vcgencmd not found: No such file or directory")
    assert first.pmic is None and not pmic.present
    assert all(s.errors == () and s.pmic is None and s.power_w is None for s in later)
    assert len(caplog.records) == 1


def test_failing_command_is_an_error_line_and_retried(tmp_path: Path) -> None:
    # A real process that exits 2: python3 cannot open a script called "pmic_read_adc".
    pmic = PmicPower(sys.executable, interval_s=10.0)
    first = pmic.read(0.0)
    (line,) = first.errors
    assert line.startswith(f"power: {sys.executable} pmic_read_adc: exit status 2: ")
    assert "pmic_read_adc" in line.split("exit status 2: ")[1]
    assert pmic.present and first.pmic is None
    assert pmic.read(5.0).errors == ()  # not retried before the interval
    assert len(pmic.read(10.0).errors) == 1


def test_a_real_process_replaying_recorded_output(tmp_path: Path) -> None:
    (tmp_path / "recorded.txt").write_text(PI5_PMIC_ADC)
    script = tmp_path / "vcgencmd"
    script.write_text(f'#!/bin/sh\n[ "$1" = pmic_read_adc ] || exit 1\nexec cat {tmp_path}/recorded.txt\n')
    script.chmod(0o755)
    assert PmicPower(str(script)).read(0.0).power_w == pytest.approx(3.50705, abs=1e-5)


def test_output_that_is_not_rails_is_an_error_line() -> None:
    sample = PmicPower(run=Replay('error=2 error_msg="Command not registered"\n')).read(0.0)
    (line,) = sample.errors
    assert line.startswith("power: vcgencmd pmic_read_adc: expected '<RAIL>_A current")
    assert sample.pmic is None


def test_a_hung_command_times_out(tmp_path: Path) -> None:
    script = tmp_path / "vcgencmd"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    with pytest.raises(HardwareError, match=r"vcgencmd pmic_read_adc: no answer within 0.2 s"):
        run_command([str(script), "pmic_read_adc"], 0.2)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s: expected a number above 0"):
        PmicPower(interval_s=-1)


# --- INA219 / INA226 ------------------------------------------------------------------------------------------------


class RegisterMap:
    """Stands in for an I2C bus holding one INA chip. There is no I2C hardware here, so this is the one fake bus:
    registers hold the chip's 16-bit values, and reads return them as SMBus words do (low byte first)."""

    def __init__(self, address: int, registers: dict[int, int]) -> None:
        self.address = address
        self.registers = registers
        self.closed = False

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        if i2c_addr != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        word = self.registers[register]
        return (word & 0xFF) << 8 | word >> 8

    def close(self) -> None:
        self.closed = True


def ina(kind: str, shunt_reg: int, bus_reg: int, shunt_ohms: float, address: int = 0x40) -> Ina2xx:
    bus = RegisterMap(0x40, {0x01: shunt_reg, 0x02: bus_reg})
    return Ina2xx(1, address, kind=kind, shunt_ohms=shunt_ohms, smbus_factory=lambda n: bus)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "shunt_reg", "bus_reg", "shunt_ohms", "bus_v", "shunt_v", "current_a"),
    [
        # INA219: bus 12 V = 3000 × 4 mV in bits 15..3, with CNVR (bit 1) set; shunt +32 mV = 3200 × 10 µV.
        ("ina219", 0x0C80, 0x5DC2, 0.1, 12.0, 0.032, 0.32),
        # INA219 full scale both ways: ±320 mV is 0x7D00 / 0x8300 in the datasheet's table.
        ("ina219", 0x7D00, 0x0000, 0.1, 0.0, 0.32, 3.2),
        ("ina219", 0x8300, 0x0FA0, 0.1, 2.0, -0.32, -3.2),
        # INA226: bus 0x2580 = 9600 × 1.25 mV = 12 V; shunt 4000 × 2.5 µV = 10 mV; -10 mV is 0xF060.
        ("ina226", 0x0FA0, 0x2580, 0.002, 12.0, 0.010, 5.0),
        ("ina226", 0xF060, 0x2580, 0.002, 12.0, -0.010, -5.0),
        ("ina226", 0x7FFF, 0x7FFF, 0.1, 40.95875, 0.0819175, 0.819175),
    ],
)
def test_ina_datasheet_values(
    kind: str, shunt_reg: int, bus_reg: int, shunt_ohms: float, bus_v: float, shunt_v: float, current_a: float
) -> None:
    reading = ina(kind, shunt_reg, bus_reg, shunt_ohms).read()
    assert reading.bus_v == pytest.approx(bus_v)
    assert reading.shunt_v == pytest.approx(shunt_v)
    assert reading.current_a == pytest.approx(current_a)
    assert reading.power_w == pytest.approx(bus_v * current_a)


@given(st.sampled_from(["ina219", "ina226"]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_ina_any_registers(kind: str, shunt_reg: int, bus_reg: int) -> None:
    reading = ina(kind, shunt_reg, bus_reg, 0.01).read()
    signed = int.from_bytes(shunt_reg.to_bytes(2, "big"), "big", signed=True)
    if kind == "ina219":
        assert reading.bus_v == pytest.approx((bus_reg >> 3) * 0.004)
        assert reading.shunt_v == pytest.approx(signed * 10e-6)
    else:
        assert reading.bus_v == pytest.approx(bus_reg * 0.00125)
        assert reading.shunt_v == pytest.approx(signed * 2.5e-6)
    assert reading.current_a == pytest.approx(reading.shunt_v / 0.01)


def test_ina_nothing_at_the_address() -> None:
    with pytest.raises(HardwareError, match=r"^ina226 \(i2c-1 0x41\): register 0x01: Remote I/O error$"):
        ina("ina226", 0, 0, 0.1, address=0x41).read()


def test_ina_bus_that_cannot_be_opened() -> None:
    def no_bus(n: int) -> RegisterMap:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    chip = Ina2xx(3, 0x40, kind="ina219", shunt_ohms=0.1, smbus_factory=no_bus)
    with pytest.raises(HardwareError, match=r"ina219 \(i2c-3 0x40\): /dev/i2c-3: No such file or directory \(is the"):
        chip.read()


def test_ina_real_smbus2_on_a_missing_bus() -> None:
    # The default factory (smbus2, when installed) on a bus this machine does not have.
    chip = Ina2xx(99, 0x40, kind="ina219", shunt_ohms=0.1)
    with pytest.raises(HardwareError, match=r"ina219 \(i2c-99 0x40\): (/dev/i2c-99: |smbus2 is not installed)"):
        chip.read()


def test_ina_close_and_context_manager() -> None:
    bus = RegisterMap(0x40, {0x01: 0, 0x02: 0})
    with Ina2xx(1, 0x40, kind="ina219", shunt_ohms=0.1, smbus_factory=lambda n: bus) as chip:  # type: ignore[arg-type]
        chip.read()
        assert not bus.closed
    assert bus.closed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ina260", "shunt_ohms": 0.1}, "kind: expected one of ina219, ina226, got 'ina260'"),
        ({"kind": "ina219", "shunt_ohms": 0.0}, "shunt_ohms: expected a resistance above 0, got 0.0"),
        ({"kind": "ina219", "shunt_ohms": 0.1, "address": 0x80}, "address: expected a 7-bit I2C address"),
    ],
)
def test_ina_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    address = kwargs.pop("address", 0x40)
    with pytest.raises(ValueError, match=message):
        Ina2xx(1, address, **kwargs)  # type: ignore[arg-type]
