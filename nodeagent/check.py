"""``picluster-agent check``: what this node is, where each sensor comes from, one sample, and every problem.

It reads, it never drives: no fan is taken over, no job runs. Each problem names the cause and the fix.
Exit status 0 when nothing needs fixing, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pwd
import shutil
import sys
import time
from typing import Any, TextIO

from nodeagent.config import AgentConfig, real_backend_options
from nodeagent.errors import HardwareError
from nodeagent.hw import Backend, SysfsRoot, make_backend
from nodeagent.hw.boot_config import check_boot_config, print_boot_config
from nodeagent.hw.fans.base import FanConfig
from nodeagent.hw.fans.sysfs_pwm import find_pwmchip
from nodeagent.hw.pcie import PcieSample, aer_problems, by_count
from nodeagent.hw.profiles import fan_source
from nodeagent.hw.slot_lines import find_chip
from nodeagent.node.safety import drives_chassis_fan, switches_slots
from nodeagent.node.telemetry import telemetry_from
from nodeagent.protocol import to_wire
from nodeagent.security.operators import read_operator_keys


def _dev(root: SysfsRoot, path: str) -> str:
    """A /dev path as seen under ``root`` (the root itself on a node)."""
    return str(root.path(path.lstrip("/")))


def fan_problems(fan: FanConfig, root: SysfsRoot) -> tuple[str, list[str]]:
    """What this fan would be driven through, and what stops it, without touching the device."""
    problems: list[str] = []
    if fan.backend in ("pwmfan", "auto"):
        hwmon = root.find_hwmon(fan.hwmon_name)
        smart_uart = os.path.exists(_dev(root, fan.uart_device)) if fan.backend == "auto" else False
        if hwmon is None and not smart_uart:
            problems.append(
                f"fan: no hwmon named {fan.hwmon_name!r}: connect the fan, or enable the fan "
                "connector with dtparam=cooling_fan=on in config.txt, or name the fan in [[fan]]"
            )
        elif hwmon is not None and not os.access(hwmon / "pwm1", os.W_OK):
            problems.append(f"fan: {hwmon / 'pwm1'} is not writable: run the agent as root")
        where = str(hwmon) if hwmon else ("smart fan unit on " + fan.uart_device if smart_uart else "nothing found")
        return where, problems
    if fan.backend == "sysfs-pwm":
        try:
            return str(find_pwmchip(root, fan.pwm_chip)), problems
        except HardwareError as e:
            problems.append(
                f"fan: {e} — load a PWM overlay that routes GPIO12/13 to the PWM block (see docs/hardware.md)"
            )
            return "pwm chip not found", problems
    device = {"gpio": "/dev/gpiochip0", "smart-unit": fan.uart_device}.get(fan.backend, f"/dev/i2c-{fan.i2c_bus}")
    if not os.path.exists(_dev(root, device)):
        fix = {"gpio": "is this a Raspberry Pi?", "smart-unit": "enable the UART (dtoverlay for GPIO12/13)"}
        problems.append(f"fan: {device} does not exist: {fix.get(fan.backend, 'enable I2C (dtparam=i2c_arm=on)')}")
    if fan.backend == "gpio" and importlib.util.find_spec("gpiozero") is None:
        problems.append("fan: gpiozero is not installed: apt install python3-gpiozero python3-lgpio")
    return device, problems


def link_problems(devices: tuple[PcieSample, ...]) -> list[str]:
    """Links trained below their maximum: a warning, usually a Gen 3 setting the cable or adapter cannot hold."""
    return [
        f"pcie: {d.bdf} ({d.pci_id}) trained at {d.link}: check the cable or adapter, or drop "
        "dtparam=pciex1_gen=3 from config.txt if the link cannot hold Gen 3"
        for d in devices
        if d.link is not None and d.link.degraded
    ]


def job_problems(cfg: AgentConfig) -> list[str]:
    problems = []
    for name, binary in (("jobs.mpirun", cfg.jobs.mpirun), ("jobs.hpcc", cfg.jobs.xhpl or cfg.jobs.hpcc)):
        if shutil.which(binary) is None:
            problems.append(f"jobs: {binary} not found ({name}): apt install openmpi-bin hpcc libopenblas0")
    if os.geteuid() == 0 and cfg.hardware.backend != "sim":
        try:
            pwd.getpwnam(cfg.jobs.user)
        except KeyError:
            problems.append(f"jobs: jobs.user {cfg.jobs.user!r} does not exist: adduser --system {cfg.jobs.user}")
    return problems


def security_state(cfg: AgentConfig) -> tuple[dict[str, Any], list[str]]:
    """Whose commands this node obeys, and what stands in the way (no key, a key file it must skip)."""
    keys = read_operator_keys(cfg.security.operator_keys_dir)
    where = cfg.security.operator_keys_dir
    info = {
        "require_signed": cfg.signed_only,
        "operator_keys": f"{', '.join(keys.names) or 'none'} ({where})",
        "node_key": f"{cfg.node_key_path}" + ("" if cfg.node_key_path.exists() else " (made on the first start)"),
    }
    if not cfg.signed_only:
        return info, []
    problems = [f"security: {p}" for p in keys.problems if not p.endswith("no operator key is trusted")]
    if not keys.keys:
        problems.append(
            f"security: no operator key in {where}: this node requires signed commands and refuses every one; "
            f"install the operator's .pub there (piclusterctl keygen prints it), then systemctl reload picluster-agent"
        )
    return info, problems


def chassis_duties(cfg: AgentConfig, board: str, ladder: tuple[int, ...], root: SysfsRoot) -> tuple[dict, list[str]]:
    """What this node does for its chassis, and what stands in the way (the slot power expander)."""
    info: dict[str, Any] = {
        "freq_cap": f"{ladder[0] // 1000}-{ladder[-1] // 1000} MHz, {len(ladder)} steps" if ladder else "not possible",
        "chassis_fan_and_budget": drives_chassis_fan(cfg.policy.chassis, board, cfg.hardware.slot),
        "slot_power": "off",
    }
    problems = []
    if switches_slots(cfg.slot_power, board, cfg.hardware.slot):
        try:
            info["slot_power"] = f"gpiochip{find_chip(root, cfg.slot_power)}"
        except HardwareError as e:
            info["slot_power"] = "expander not found"
            problems.append(str(e))
    return info, problems


def collect(cfg: AgentConfig, backend: Backend | None = None) -> dict[str, Any]:
    """Everything ``check`` reports, as plain data."""
    backend = backend or make_backend(
        cfg.hardware.backend,
        root=cfg.hardware.root,
        node_id=cfg.node_id,
        sim=cfg.sim,
        **real_backend_options(cfg.hardware),
    )
    root = SysfsRoot(cfg.hardware.root)
    with backend:
        facts = backend.facts()
        sample = backend.read(time.time())
        sources = backend.describe()
        ladder = backend.freq_ladder_khz()
    fans, fan_from = fan_source(cfg.fan, facts.board, cfg.hardware.slot)
    fan_rows, problems = [], list(sample.errors)
    for fan in fans:
        where, trouble = fan_problems(fan, root)
        fan_rows.append({"backend": fan.backend, "device": where, "ok": not trouble})
        problems += trouble
    chassis, chassis_problems = chassis_duties(cfg, facts.board, ladder, root)
    boot = check_boot_config(facts.model, facts.board, simulated=backend.name == "sim")
    security, security_problems = security_state(cfg)
    problems += job_problems(cfg) + link_problems(sample.pcie) + chassis_problems + list(boot.problems)
    problems += security_problems
    problems += [p for d in sample.pcie for p in aer_problems(d.bdf, d.pci_id, d.counters)]
    telemetry = to_wire(telemetry_from(cfg.node_id, 0, sample, None))
    return {
        "node": cfg.node_id,
        "config": cfg.source,
        "backend": backend.name,
        "root": cfg.hardware.root,
        "facts": dataclasses.asdict(facts),
        "sources": sources,
        "fans": {"from": fan_from, "fans": fan_rows},
        "chassis": chassis,
        "security": security,
        "boot_config": boot.as_dict(),
        "sample": {k: v for k, v in telemetry.items() if k not in ("v", "type", "seq", "node")},
        "problems": problems,
    }


def report(data: dict[str, Any], out: TextIO) -> None:
    """The human-readable form of ``collect``'s result."""
    f = data["facts"]
    print(
        f"node {data['node']}: {f['model']} (board {f['board']}, serial {f['serial']}, {f['cores']} cores, "
        f"{f['memory_mb']} MB), {data['backend']} backend, root {data['root']}, config {data['config']}",
        file=out,
    )
    print("\nsensors:", file=out)
    for name, where in data["sources"].items():
        print(f"  {name:<14} {where}", file=out)
    print(f"\nfans (from {data['fans']['from']}):", file=out)
    for fan in data["fans"]["fans"] or [{"backend": "none", "device": "this node drives no fan", "ok": True}]:
        print(f"  {fan['backend']:<14} {fan['device']}{'' if fan['ok'] else '  (problem below)'}", file=out)
    print("\nchassis:", file=out)
    for name, value in data["chassis"].items():
        print(f"  {name:<22} {value}", file=out)
    print("\nsecurity:", file=out)
    for name, value in data["security"].items():
        print(f"  {name:<22} {value}", file=out)
    print_boot_config(data["boot_config"], out)
    s = data["sample"]
    print("\none sample:", file=out)
    for key in (
        "temp_c",
        "freq_mhz",
        "governor",
        "throttle",
        "load1",
        "mem_avail_mb",
        "fan_duty_pct",
        "fan_rpm",
        "power_w",
        "ext5v_v",
        "input_power_w",
    ):
        print(f"  {key:<14} {_shown(s.get(key))}", file=out)
    for drive in s["nvme"]:
        print(
            f"  nvme {drive['device']:<9} present={drive['present']} temp_c={_shown(drive['temp_c'])} "
            f"warnings={_shown(drive['warnings'])} spare={_shown(drive['available_spare_pct'])}% "
            f"used={_shown(drive['percentage_used_pct'])}%",
            file=out,
        )
    for dev in s["pcie"]:
        speed, top = _shown(dev["speed_gts"]), _shown(dev["max_speed_gts"])
        link = f"{speed} GT/s x{_shown(dev['width'])} (max {top} GT/s x{_shown(dev['max_width'])})"
        types = dev.get("aer_types") or {}
        aer = " ".join(
            f"{label}={_shown(dev[f'aer_{sev}'])}" + (f" ({by_count(types[sev])})" if types.get(sev) else "")
            for label, sev in (("cor", "correctable"), ("nonfatal", "nonfatal"), ("fatal", "fatal"))
        )
        print(f"  pcie {dev['device']:<14} {link}{' DEGRADED' if dev['degraded'] else ''} aer {aer}", file=out)
    print(f"\nproblems: {len(data['problems']) or 'none'}", file=out)
    for problem in data["problems"]:
        print(f"  - {problem}", file=out)


def _shown(value: Any) -> str:
    """A value for the operator: "-" where the node could not read it (never "None"), a list as words."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return "-" if value is None else str(value)


def main_check(cfg: AgentConfig, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    data = collect(cfg)
    if as_json:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
    else:
        report(data, out)
    return 1 if data["problems"] else 0
