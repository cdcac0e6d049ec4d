"""``picluster-agent failsafe``: every configured fan to full speed, by the most direct path each has.

systemd runs it as the agent unit's ``ExecStopPost=``, so it runs after a clean stop and after a crash alike.
Per backend, "full" is:

- ``pwmfan``: ``pwm1_enable`` = 1, then ``pwm1`` = 255.
- ``sysfs-pwm``: export if needed, ``duty_cycle`` = ``period``, ``enable`` = 1 (the kernel keeps it after exit).
- ``gpio``: the pin driven fully on through gpiozero; held only while this process lives (see ``hw/fans/gpio.py``).
- ``smart-unit``: "set 100 %" sent and drained (the unit keeps the last speed it was asked for).
- ``emc2301``: direct mode, fan setting 0xFF; ``emc2101``: fan setting 63.
- ``auto``: whatever ``auto`` finds; finding no fan at all is reported but is not a failure (nothing to cool).

A fan that fails is reported on stderr, naming the device and path, and the others are still tried. Exit status
0 when every fan went to full, 1 otherwise (and 1 when the configuration had errors), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from nodeagent.errors import ConfigError
from nodeagent.hw.fans.base import Fan, FanConfig
from nodeagent.hw.fans.factory import SerialOpener, SmbusFactory, make_fan
from nodeagent.hw.root import SysfsRoot
from nodeagent.protocol.typecheck import FieldError, build

PROG = "picluster-agent failsafe"
DEFAULT_CONFIG = "/etc/picluster/agent.toml"  # the agent's own file; its other tables are ignored here

# Fans set to full stay referenced here until the process exits: a gpiozero device that is garbage-collected
# closes its pin, and a closed pin no longer drives the fan.
HELD: list[Fan] = []


def failsafe(
    cfg_fans: Sequence[FanConfig],
    root: SysfsRoot,
    *,
    pin_factory: Any = None,
    serial_opener: SerialOpener | None = None,
    smbus_factory: SmbusFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Set every fan in ``cfg_fans`` to full; 0 if all went full, 1 if any did not (each failure on ``err``).

    The fans are left open (see ``HELD``): closing would hand them back, which is the opposite of the point.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    failed = 0
    for i, cfg in enumerate(cfg_fans):
        label = f"fan[{i}] {cfg.name or cfg.backend}"
        if cfg.backend == "none":
            print(f"{PROG}: {label}: no fan configured, nothing to do", file=out)
            continue
        try:
            fan = make_fan(cfg, root, pin_factory=pin_factory, serial_opener=serial_opener, smbus_factory=smbus_factory)
            if fan is None:  # only "auto" gets here: no fan on this node
                print(f"{PROG}: {label}: auto found no fan on this node, nothing to do", file=out)
                continue
            HELD.append(fan)
            fan.force_full()
        except Exception as e:  # every fan gets its try, whatever the one before it raised
            failed += 1
            print(f"{PROG}: {label}: {e} - NOT at full", file=err)
            continue
        print(f"{PROG}: {label}: {fan.name}: full", file=out)
    return 1 if failed else 0


def load_fan_configs(path: str) -> tuple[list[FanConfig], list[str]]:
    """The ``[[fan]]`` tables of TOML file ``path`` as ``FanConfig`` objects, and the problems met on the way.

    A bad table is reported and skipped; the others are kept. When the file cannot be read, or no table in it is
    valid, the result is ``[FanConfig()]`` (backend ``auto``): a fail-safe that does nothing because of a typo is
    worse than one that tries the fans it can find. No ``fan`` key at all also means ``auto``. A single ``[fan]``
    table counts as one fan.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return [FanConfig()], [f"{path}: cannot read the configuration ({why}); trying backend auto"]
    tables: Any = data.get("fan", [])
    if isinstance(tables, Mapping):
        tables = [tables]
    if not isinstance(tables, list):
        return [FanConfig()], [f"{path}: fan: expected [[fan]] tables, got {type(tables).__name__}; trying auto"]
    if not tables:
        return [FanConfig()], []
    fans: list[FanConfig] = []
    problems: list[str] = []
    for i, table in enumerate(tables):
        where = f"fan[{i}]"
        if not isinstance(table, Mapping):
            problems.append(f"{path}: {where}: expected a table, got {type(table).__name__}")
            continue
        try:
            fans.append(build(FanConfig, table, where, strict=True))
        except FieldError as e:
            problems.append(f"{path}: {e}")
        except ConfigError as e:  # FanConfig's own range checks say "fan.<key>"; give them the index
            problems.append(f"{path}: {where}.{str(e).removeprefix('fan.')}")
    if not fans:
        problems.append(f"{path}: no valid [[fan]] table; trying backend auto")
        fans = [FanConfig()]
    return fans, problems


def main_failsafe(argv: Sequence[str] | None = None) -> int:
    """``picluster-agent failsafe [--root DIR] [[--config] FILE]``: the command-line entry; returns the exit status.

    The file is given either way (the systemd unit passes it positionally); without one, ``DEFAULT_CONFIG``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Set every configured fan to full speed. Run by systemd after the agent stops or crashes.",
    )
    parser.add_argument(
        "config", nargs="?", help=f"TOML file with the node's [[fan]] tables (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--config", dest="config_option", metavar="FILE", help="the same file, as an option")
    parser.add_argument("--root", default="/", help="directory standing for / (a recorded sysfs tree in tests)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage error (2) or --help (0): argparse has already printed why
        return int(e.code) if isinstance(e.code, int) else 2
    if args.config and args.config_option and args.config != args.config_option:
        print(f"{PROG}: two configuration files given: {args.config}, {args.config_option}", file=sys.stderr)
        return 2
    fans, problems = load_fan_configs(args.config or args.config_option or DEFAULT_CONFIG)
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    status = failsafe(fans, SysfsRoot(args.root))
    return 1 if problems else status


if __name__ == "__main__":
    sys.exit(main_failsafe())
