"""``picluster-agent``: argument parsing and start-up only."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from nodeagent.config import DEFAULT_PATH, AgentConfig, load
from nodeagent.errors import ConfigError, PiclusterError
from nodeagent.protocol.version import __version__
from nodeagent.state import StateDirBusy, StateLock

DEFAULT_TEMPLATE = "noop=true"  # sim-fleet's light job when no --template is given (nodeagent/simfleet.py)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picluster-agent", description="picluster node agent")
    parser.add_argument("--version", action="version", version=f"picluster-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent in the foreground (what the systemd service does)")
    check = sub.add_parser("check", help="show what was detected, where each sensor comes from, and every problem")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    for cmd in (run, check):
        cmd.add_argument("--config", metavar="PATH", help=f"config file (default {DEFAULT_PATH} if it exists)")
        cmd.add_argument("--sim", action="store_true", help='simulated hardware (same as hardware.backend = "sim")')
        cmd.add_argument("--node-id", metavar="ID", help="node name (default: agent.node_id, else the host name)")
        cmd.add_argument("--broker", metavar="URL", help="broker, e.g. mqtt://broker.local:1883 (or PICLUSTER_BROKER)")
        cmd.add_argument("--cluster", metavar="NAME", help="cluster name (default: agent.cluster)")
        cmd.add_argument("--state-dir", metavar="DIR", help="this agent's own state: spool, jobs (agent.state_dir)")
        cmd.add_argument("--root", metavar="DIR", help="read sysfs under DIR (a recorded tree) instead of /")
        cmd.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    fleet = sub.add_parser(
        "sim-fleet",
        help="many simulated nodes in one process, for tests and benchmarks only",
        description="Run --count simulated nodes in this one process, FOR TESTS AND BENCHMARKS ONLY (never on a "
        "real node). Each node is the real agent on simulated hardware, with its own MQTT session (client id "
        "picluster-agent-<node>, will, retained status, facts and telemetry) and its own state directory "
        "(<state-dir>/sim/<node>); they share one network thread and --threads logic threads. Every node allows "
        "the built-in kinds of the config ([jobs] kinds, default hpl) and the light --template jobs.",
    )
    fleet.add_argument("--count", type=int, required=True, metavar="N", help="how many nodes")
    fleet.add_argument("--prefix", default="sim", help="node names: PREFIX1 .. PREFIXN (default sim)")
    fleet.add_argument("--first", type=int, default=1, metavar="K", help="number of the first node (default 1)")
    fleet.add_argument("--config", metavar="PATH", help="config file every node shares (node id and dirs are set)")
    fleet.add_argument("--broker", metavar="URL", help="broker, e.g. mqtt://127.0.0.1:1883 (or PICLUSTER_BROKER)")
    fleet.add_argument("--cluster", metavar="NAME", help="cluster name (default: agent.cluster)")
    fleet.add_argument("--state-dir", metavar="DIR", help="node N keeps its state in DIR/sim/N (agent.state_dir)")
    fleet.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help=f"a light job template on every node, run without a shell; repeatable (default: {DEFAULT_TEMPLATE})",
    )
    fleet.add_argument("--tick-s", type=float, metavar="S", help="each node's tick, telemetry included (agent.tick_s)")
    fleet.add_argument("--threads", type=int, default=1, metavar="K", help="logic threads for all nodes (default 1)")
    fleet.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default: warning")
    # Its options belong to nodeagent/failsafe.py: everything after the word is handed over unparsed.
    sub.add_parser("failsafe", add_help=False, help="set every fan to full speed (the unit's ExecStopPost hook)")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flags win over the file and the environment."""
    out: dict[str, dict[str, Any]] = {"agent": {}, "mqtt": {}, "hardware": {}}
    if getattr(args, "sim", False):
        out["hardware"]["backend"] = "sim"
    if getattr(args, "root", None):
        out["hardware"]["root"] = args.root
    if args.broker:
        out["mqtt"]["broker"] = args.broker
    for flag, key in (
        ("node_id", "node_id"),
        ("cluster", "cluster"),
        ("state_dir", "state_dir"),
        ("log_level", "log_level"),
        ("tick_s", "tick_s"),
    ):
        if getattr(args, flag, None):
            out["agent"][key] = getattr(args, flag)
    return {k: v for k, v in out.items() if v}


def setup_logging(level: str, node: str = "") -> None:
    """stderr in a terminal; under systemd, the journal with NODE= and JOB_ID= fields (``journalctl NODE=n1``)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",  # for stderr; the journal stamps its own
        handlers=[journal_handler(node) or logging.StreamHandler(sys.stderr)],
    )


def journal_handler(node: str) -> logging.Handler | None:
    """systemd-python's JournalHandler when stderr is the journal's stream ($JOURNAL_STREAM) and it imports."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
        from systemd.journal import JournalHandler
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    if stream != f"{st.st_dev}:{st.st_ino}":
        return None
    handler = JournalHandler(SYSLOG_IDENTIFIER="picluster-agent", NODE=node)

    def job_field(record: logging.LogRecord) -> bool:
        match = re.search(r"\bjob=([\w.-]+)", record.getMessage())
        if match and match.group(1) != "-":
            record.JOB_ID = match.group(1)
        return True

    handler.addFilter(job_field)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    return handler


def lock_state_dir(cfg: AgentConfig) -> StateLock | None:
    """The agent's exclusive hold on its state directory (StateDirBusy when another agent has it). A directory
    that cannot be created or locked is logged and the agent runs on: its events stay in memory
    (``event=spool_unavailable``), and keeping the node safe never depends on its disk."""
    try:
        return StateLock.acquire(cfg.state_dir, cfg.node_id)
    except StateDirBusy:
        raise
    except OSError as exc:
        logging.getLogger("picluster.agent").error(
            "event=state_dir_unusable path=%s reason=%r fix='make it writable, or choose another with --state-dir'",
            cfg.state_dir,
            exc.strerror or str(exc),
        )
        return None


def run(cfg: AgentConfig, reread: Callable[[], AgentConfig] | None = None) -> int:
    """The agent, holding its state directory for as long as it runs."""
    lock = lock_state_dir(cfg)
    try:
        return serve(cfg, reread)
    finally:
        if lock is not None:
            lock.release()


def serve(cfg: AgentConfig, reread: Callable[[], AgentConfig] | None = None) -> int:
    from nodeagent.config import real_backend_options
    from nodeagent.hw import make_backend
    from nodeagent.jobs.runner import JobLoad
    from nodeagent.malloc import hold_mmap_threshold
    from nodeagent.wiring import build

    hold_mmap_threshold()  # hostile megabyte payloads must not stay in the heap once dropped

    job_load = JobLoad()
    backend = make_backend(
        cfg.hardware.backend,
        root=cfg.hardware.root,
        node_id=cfg.node_id,
        sim=cfg.sim,
        load_fn=job_load,
        **real_backend_options(cfg.hardware),
    )
    agent = build(cfg, backend)
    job_load.runner = agent.runner
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if reread is not None:  # systemctl reload: the loop re-reads the file (Inbox.put is signal-safe for it)
        signal.signal(signal.SIGHUP, lambda *_: agent.inbox.put(("reload", reread)))
    agent.run(stop)
    return 0


def sim_fleet(args: argparse.Namespace) -> int:
    """``picluster-agent sim-fleet``: nodeagent/simfleet.py does the work (tests and benchmarks only)."""
    from nodeagent.simfleet import FLEET_DEFAULTS, fleet_config, fleet_root, node_names, run_fleet, template_from

    try:
        if args.threads < 1:
            raise ConfigError(f"--threads: expected at least 1, got {args.threads}")
        names = node_names(args.prefix, args.count, args.first)
        templates = [template_from(spec) for spec in args.template or [DEFAULT_TEMPLATE]]
        base = fleet_config(load(args.config, overrides=overrides_from(args), defaults=FLEET_DEFAULTS), templates)
    except ConfigError as exc:
        print(f"picluster-agent: sim-fleet: {exc}", file=sys.stderr)
        return 2
    setup_logging(base.agent.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return run_fleet(base, names, fleet_root(base), stop, threads=args.threads)
    except PiclusterError as exc:
        print(f"picluster-agent: sim-fleet: {exc}", file=sys.stderr)
        return 1
    finally:
        logging.shutdown()


def failsafe(argv: list[str]) -> int:
    """``picluster-agent failsafe``: nodeagent/failsafe.py does the work; imported only when asked for."""
    try:
        from nodeagent.failsafe import main_failsafe
    except ImportError as exc:
        print(f"picluster-agent: failsafe: not available ({exc})", file=sys.stderr)
        return 1
    return main_failsafe(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "failsafe":
        return failsafe(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "sim-fleet":
        return sim_fleet(args)
    try:
        cfg = load(args.config, overrides=overrides_from(args))
    except ConfigError as exc:
        print(f"picluster-agent: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        from nodeagent.check import main_check

        logging.basicConfig(level=logging.ERROR, format="%(message)s")  # problems are in the report, not the log
        return main_check(cfg, as_json=args.json)
    setup_logging(cfg.agent.log_level, cfg.node_id)
    try:
        return run(cfg, reread=lambda: load(args.config, overrides=overrides_from(args)))
    except PiclusterError as exc:
        print(f"picluster-agent: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, StateDirBusy)) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
