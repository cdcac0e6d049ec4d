"""``picluster-agent``: argument parsing and start-up only."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from nodeagent import __version__
from nodeagent.config import DEFAULT_PATH, AgentConfig, load
from nodeagent.errors import ConfigError, PiclusterError
from nodeagent.jobs.runner import Runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picluster-agent", description="picluster node agent")
    parser.add_argument("--version", action="version", version=f"picluster-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent in the foreground (what the systemd service does)")
    run.add_argument("--config", metavar="PATH", help=f"config file (default {DEFAULT_PATH} if it exists)")
    run.add_argument("--sim", action="store_true", help='simulated hardware (same as hardware.backend = "sim")')
    run.add_argument("--node-id", metavar="ID", help="node name (default: agent.node_id, else the host name)")
    run.add_argument("--broker", metavar="URL", help="broker, e.g. mqtt://broker.local:1883 (or PICLUSTER_BROKER)")
    run.add_argument("--cluster", metavar="NAME", help="cluster name (default: agent.cluster)")
    run.add_argument("--state-dir", metavar="DIR", help="where job directories are kept (agent.state_dir)")
    run.add_argument("--root", metavar="DIR", help="read sysfs under DIR (a recorded tree) instead of /")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flags win over the file and the environment."""
    out: dict[str, dict[str, Any]] = {"agent": {}, "mqtt": {}, "hardware": {}}
    if args.sim:
        out["hardware"]["backend"] = "sim"
    if args.root:
        out["hardware"]["root"] = args.root
    if args.broker:
        out["mqtt"]["broker"] = args.broker
    for flag, key in (
        ("node_id", "node_id"),
        ("cluster", "cluster"),
        ("state_dir", "state_dir"),
        ("log_level", "log_level"),
    ):
        if getattr(args, flag):
            out["agent"][key] = getattr(args, flag)
    return {k: v for k, v in out.items() if v}


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


class JobLoad:
    """Cores the node's jobs keep busy: what heats a simulated node. Bound to the runner once it exists."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def __call__(self) -> float:
        return self.runner.busy_cores(time.monotonic()) if self.runner else 0.0


def run(cfg: AgentConfig) -> int:
    from nodeagent.agent import Agent
    from nodeagent.hw import make_backend

    job_load = JobLoad()
    backend = make_backend(
        cfg.hardware.backend,
        root=cfg.hardware.root,
        node_id=cfg.node_id,
        sim=cfg.sim,
        load_fn=job_load,
        board=cfg.hardware.board,
        throttle_path=cfg.hardware.throttle_path,
    )
    agent = Agent(cfg, backend)
    job_load.runner = agent.runner
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load(args.config, overrides=overrides_from(args))
    except ConfigError as exc:
        print(f"picluster-agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.agent.log_level)
    try:
        return run(cfg)
    except PiclusterError as exc:
        print(f"picluster-agent: {exc}", file=sys.stderr)
        return 1 if not isinstance(exc, ConfigError) else 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
