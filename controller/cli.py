"""``piclusterctl``: parse, then run the chosen subcommand; the grammar is args.py, the work is in the subcommand
modules (imported only once one is chosen, so ``--help`` and ``--version`` stay light).

Exit codes: 0 success (every node passed), 1 a node failed or the broker is unreachable, 2 usage error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from controller.args import COMMANDS, DEFAULT_BROKER, CommandFailed, UsageError, build_parser, rewrite

TYPE_CHECKING = False  # not typing's: importing typing costs --version a few milliseconds
if TYPE_CHECKING:
    import argparse

    from nodeagent.mqtt.settings import Broker
    from nodeagent.protocol.topics import Topics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(rewrite(sys.argv[1:] if argv is None else argv))
    # Only now, with a subcommand chosen (--version and --help have exited above), the rest of piclusterctl.
    from nodeagent.mqtt.settings import Broker
    from nodeagent.protocol.topics import Topics

    try:
        _login_from_options(args)
        if args.command == "keygen":
            from controller.signing import keygen

            return keygen(args)
        broker = Broker.parse(args.broker or os.environ.get("PICLUSTER_BROKER") or DEFAULT_BROKER)
        topics = Topics(args.cluster or os.environ.get("PICLUSTER_CLUSTER") or "default")
        return _run(args, broker, topics)
    except CommandFailed as exc:  # the broker unreachable, the history unusable
        print(f"piclusterctl: {exc}", file=sys.stderr)
        return 1
    except (UsageError, ValueError) as exc:  # node sets, --param and --set values, bad messages: all ValueError
        print(f"piclusterctl: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, broker: Broker, topics: Topics) -> int:
    """The chosen subcommand, from the module that holds it."""
    if args.command in COMMANDS:
        from controller import jobs_cli

        return jobs_cli.main(args, broker, topics)
    if args.command == "run" and args.kind != "hpl":
        from controller import run_kinds

        return run_kinds.cmd_run(broker, topics, args)
    if args.command == "run" and not args.per_node:
        if args.timeout <= 0:
            raise UsageError("--timeout: expected a number of seconds above 0")
        from controller import cluster_cli

        return cluster_cli.run(broker, topics, args)
    if args.command == "top":
        from controller import top

        return top.cmd_top(broker, topics, args)
    if args.command == "plot":
        from controller import plot_cli

        return plot_cli.cmd_plot(broker, topics, args)
    from controller import fleet_cli

    if args.command == "nodes":
        return fleet_cli.cmd_nodes(broker, topics, as_json=bool(args.json))
    if args.command in ("fan", "identify", "policy"):
        return fleet_cli.cmd_ops(broker, topics, args)
    if args.command == "forget":
        return fleet_cli.cmd_forget(broker, topics, args)
    if args.command == "power":
        return fleet_cli.cmd_power(broker, topics, args)
    return fleet_cli.cmd_run_hpl(broker, topics, args)


def _login_from_options(args: argparse.Namespace) -> None:
    """The --mqtt-* options override the environment every session reads its login from; an unreadable
    password file is a usage error now rather than a refused connection later."""
    from nodeagent.mqtt.env import ENV_KEY
    from nodeagent.mqtt.settings import ENV_CA_FILE, ENV_PASSWORD_FILE, ENV_USERNAME, Credentials

    for value, key in (
        (args.mqtt_user, ENV_USERNAME),
        (args.mqtt_password_file, ENV_PASSWORD_FILE),
        (args.mqtt_ca_file, ENV_CA_FILE),
        (args.key, ENV_KEY),
    ):
        if value:
            os.environ[key] = value
    Credentials.from_env(os.environ)


if __name__ == "__main__":
    sys.exit(main())
